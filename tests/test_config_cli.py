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
