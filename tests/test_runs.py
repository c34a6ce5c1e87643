"""Resumable JSON-lines studies (qcdgip.runs): a study in the same directory never loses another one's rows."""

import json

from qcdgip.runs import append_row, resumable_rows


def test_rows_of_another_configuration_are_kept_and_a_cut_line_is_dropped(tmp_path):
    path = tmp_path / "results.jsonl"
    old = [{"key": "a", "k": k, "value": k * 1.5} for k in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in old) + '{"key": "b", "k": 0, "val')  # killed mid-line

    assert resumable_rows(path, "b", "k") == {}
    with path.open("a") as fh:
        append_row(fh, {"key": "b", "k": 0, "value": 7.0})

    assert resumable_rows(path, "a", "k") == {r["k"]: r for r in old}
    assert resumable_rows(path, "b", "k") == {0: {"key": "b", "k": 0, "value": 7.0}}
    assert len(path.read_text().splitlines()) == 4
