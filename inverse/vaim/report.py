"""What a VAIM run prints and writes in ``report.md``: each observation's modes and forward consistency."""

from __future__ import annotations

from typing import Any

from qcdgip.runs import format_table

__all__ = ["vaim_report", "vaim_table"]


def vaim_table(summary: dict[str, Any]) -> str:
    """Per observation and mode: share of the draws, median, sd and forward consistency."""
    rows = []
    for i, r in enumerate(summary["observations"]):
        c = r["forward_consistency"]
        for j, mode in enumerate(r["modes"]):
            rows.append(
                [
                    i,
                    j,
                    mode["fraction"],
                    ", ".join(f"{k}={v:.4g}" for k, v in mode["median"].items()),
                    ", ".join(f"{v:.3g}" for v in mode["sd"].values()),
                    c["raw"]["within"] if j == 0 else "",
                    c["repaired"]["within"] if j == 0 else "",
                ]
            )
    return format_table(
        ["obs", "mode", "fraction", "median", "sd", "consistent (raw)", "consistent (repaired)"], rows, ".4g"
    )


def vaim_report(summary: dict[str, Any], plots: bool) -> str:
    """``report.md`` of a VAIM run."""
    lines = [
        f"# VAIM: {summary['problem']['simulator']}",
        "",
        f"{summary['steps']} steps, {summary['weights']} weights, {summary['timing_s']['total']:.1f} s in all.",
        "",
        "```",
        vaim_table(summary),
        "```",
        "",
        "Consistent: share of draws with RMS |f(x) - y| / noise within the configured number of sigmas, judged "
        "with the true simulator; raw = decoder draws, repaired = after the learned-forward repair.",
    ]
    if plots:
        lines += ["", "![solutions](solutions.png)", "![latent](latent.png)", "![forward](forward.png)"]
    return "\n".join(lines) + "\n"
