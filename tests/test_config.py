from pathlib import Path

import pytest
import yaml

from physics.config import PhysicsConfig, ReferenceConfig
from qcdgip.config import load_config

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_defaults_are_the_toy_of_the_design():
    cfg = PhysicsConfig()
    assert cfg.parameter_names == ["Nu", "au", "bu", "Nd", "ad", "bd"]
    assert cfg.truth == [2.1875, -0.5, 3.0, 1.09375, -0.5, 4.0]
    assert cfg.low == [0, -1, 0, 0, -1, 0] and cfg.high == [3, 1, 5, 3, 1, 5]
    assert [d.name for d in cfg.datasets] == ["sigma1_low", "sigma1_high", "sigma2_low", "sigma2_high"]
    assert cfg.cases["A"] == {"sigma1": 100000, "sigma2": 50000}
    assert cfg.cases["C"] == {"sigma1": 1000, "sigma2": 500}


def test_shipped_runcard_equals_defaults():
    cfg = load_config(REPO / "configs" / "reference.yaml", ReferenceConfig)
    assert cfg.physics == PhysicsConfig()


def test_override_from_yaml(tmp_path):
    path = write(
        tmp_path,
        {
            "physics": {
                "case": "A",
                "parameters": [
                    {"name": n, "truth": t, "low": lo, "high": 6}
                    for n, t, lo in zip("abcdef", [1, 0, 2, 1, 0, 3], [0, -2, 0, 0, -2, 0])
                ],
            }
        },
    )
    cfg = load_config(path, ReferenceConfig)
    assert cfg.physics.case == "A"
    assert cfg.physics.truth == [1, 0, 2, 1, 0, 3]


@pytest.mark.parametrize(
    ("physics", "needle"),
    [
        (
            {
                "parameters": [{"name": "Nu", "truth": 9, "low": 0, "high": 3}]
                + [{"name": f"p{i}", "truth": 0.5, "low": 0, "high": 1} for i in range(5)]
            },
            "outside its box",
        ),
        (
            {"datasets": [{"name": "bad", "observable": "sigma1", "x_min": 0.5, "x_max": 0.3}]},
            "x_min < x_max",
        ),
        (
            {"datasets": [{"name": "d", "observable": "sigma9", "x_min": 0.1, "x_max": 0.3}]},
            "unknown observable",
        ),
        ({"case": "Z"}, "case"),
        ({"cases": {"B": {"sigma1": -5, "sigma2": 5}}}, "must be > 0"),
        ({"quadrature": {"order": 1}}, "quadrature.order"),
        ({"flavours": ["u"]}, "flavours"),
        (
            {
                "parameters": [
                    {"name": f"p{i}", "truth": 0.0, "low": -2 if i % 3 == 2 else 0, "high": 1} for i in range(6)
                ]
            },
            "diverges",
        ),
    ],
)
def test_bad_values_name_the_field_and_file(tmp_path, physics, needle):
    path = write(tmp_path, {"physics": physics})
    with pytest.raises(ValueError) as err:
        load_config(path, ReferenceConfig)
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_config(tmp_path / "nope.yaml", ReferenceConfig)
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(write(tmp_path, "physics: [unclosed"), ReferenceConfig)
    with pytest.raises(ValueError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"), ReferenceConfig)
