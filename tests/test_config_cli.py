import pytest

from uio_robot.agent import cli
from uio_robot.agent.config import ConfigError, load_config


def test_overrides_apply():
    cfg = load_config(["loop.rate_hz=30", "eval.episodes=5", "out_dir=/tmp/x"])
    assert cfg.loop.rate_hz == 30.0 and cfg.eval.episodes == 5 and cfg.out_dir == "/tmp/x"


@pytest.mark.parametrize(
    "override, key",
    [("loop.rate_hz=-1", "loop.rate_hz"), ("loop.on_deadline=maybe", "loop.on_deadline"),
     ("loop.unknown=1", "loop.unknown"), ("env.image_size=abc", "env.image_size")],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config([override])


def test_cli_usage_and_unknown_command(capsys):
    assert cli.main([]) == 0
    assert "bench-loop" in capsys.readouterr().out
    assert cli.main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_policy_period_sets_how_far_apart_model_rows_are():
    from uio_robot.agent.policy_recipe import policy_recipe_from_config
    from uio_robot.agent.protocols import ArraySpec

    spec = ArraySpec(("a",), [-1.0], [1.0])
    cfg = load_config(["policy.period_s=0.1", "loop.rate_hz=10"])
    assert policy_recipe_from_config(cfg, spec, spec).kwargs["model_period"] == 0.1
    assert policy_recipe_from_config(load_config([]), spec, spec).kwargs["model_period"] is None  # the model's
    assert policy_recipe_from_config(load_config(["loop.rate_hz=4", "policy.period_s=0.25"]), spec,
                                     spec).kwargs["model_period"] == 0.25
    with pytest.raises(ConfigError, match="policy.period_s"):
        load_config(["policy.period_s=-1"])
