"""The command line's first contact: configs by name from any directory, `--config.*`
overrides, and one `error:` line (advice first, no help text) for each usage mistake."""
import pathlib

from absl import flags
import pytest

from r3vae_jax import configs, main

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_configs_resolve_by_name_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path, arg = configs.resolve("beauty:rqvae")
  assert path == str(REPO / "r3vae_jax" / "configs" / "beauty.py") and arg == "rqvae"
  # The repository-relative path of the README still works outside the repository.
  assert configs.resolve("r3vae_jax/configs/default.py")[0] == configs.resolve("default")[0]
  c = configs.load("beauty:rqvae")
  assert (c.dataset, c.tokenizer) == ("beauty", "rqvae")
  (tmp_path / "mine.py").write_text(
      "from r3vae_jax.configs import default\n"
      "def get_config(arg=None):\n  c = default.get_config(arg)\n  c.seed = 7\n  return c\n")
  assert configs.load("mine.py:rqkmeans").seed == 7
  assert "beauty" in configs.names() and "presets" not in configs.names()


def test_overrides_parse_as_the_fields_type():
  c = configs.load("default")
  configs.apply_overrides(c, [("train.lr", "5e-4"), ("train.epochs", "3"), ("eval.ks", "(5,10)"),
                              ("train.length_buckets", "()"), ("eval.exclude_seen", "true"),
                              ("tokenizer", "rqvae"), ("r3vae.hidden", "(64,)"),
                              ("train.lr", "1")])
  assert c.train.lr == 1.0 and isinstance(c.train.lr, float)
  assert (c.train.epochs, c.eval.ks, c.train.length_buckets) == (3, (5, 10), ())
  assert c.eval.exclude_seen is True and c.tokenizer == "rqvae" and c.r3vae.hidden == (64,)


@pytest.mark.parametrize("field,text,message", [
    ("train.epoch", "3", r"^did you mean --config\.train\.epochs\? --config\.train\.epoch=3: "
                         r"no such config field 'epoch' in config\.train$"),
    ("trian.lr", "3", r"^did you mean --config\.train\? .*no such config field 'trian'"),
    ("train.batch_size", "abc", r"--config\.train\.batch_size=abc: expected an int$"),
    ("train.epochs", "2.5", r"expected an int$"),
    ("train", "3", r"config\.train is a group of fields"),
])
def test_bad_overrides_are_one_line_with_advice_first(field, text, message):
  with pytest.raises(configs.ConfigError, match=message):
    configs.apply_overrides(configs.load("default"), [(field, text)])


@pytest.mark.parametrize("spec,message", [
    ("beuty:r3vae", r"^did you mean --config=beauty:r3vae\? "),
    ("nowhere/x.py", r"^use --config=NAME\[:ARG\] .*no such file 'nowhere/x\.py'"),
])
def test_unknown_configs_name_the_choices(spec, message):
  with pytest.raises(configs.ConfigError, match=message):
    configs.resolve(spec)


def _stderr_of(argv, capsys):
  """(exit code, stderr lines) of the command line `argv` run in-process."""
  capsys.readouterr()
  try:
    with pytest.raises(SystemExit) as exit_info:
      main.parse_flags(["r3vae"] + argv)
      main.main(["r3vae"])
  finally:
    flags.FLAGS.unparse_flags()
  return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("argv,line", [
    (["--workdir={w}", "--config.train.epoch=3"],
     "error: flags: did you mean --config.train.epochs? --config.train.epoch=3: no such config "
     "field 'epoch' in config.train"),
    (["--mode=recommend"], "error: add --workdir=DIR, the folder of the run's files "
                           "(e.g. --workdir=/tmp/r3vae)"),
    (["--mode=recommend", "--workdir={w}"],
     "error: add --user=N (a user index) or --items=i1,i2,... to --mode=recommend"),
    (["--wrkdir={w}"], "error: did you mean --workdir? Unknown command line flag 'wrkdir' "
                       "(r3vae --help lists the flags)"),
    (["--mode=evaluate", "--workdir={w}"],
     "error: flags: give --config=NAME or train in this workdir first: {w} holds no config.json "
     "(--mode=all writes it)"),
    (["--workdir={w}", "--profile_steps=5"],
     "error: write --profile_steps=A,B with 0 <= A < B (training steps); got 5"),
])
def test_usage_mistakes_print_one_line(argv, line, tmp_path, capsys):
  w = str(tmp_path / "run")
  code, err = _stderr_of([a.format(w=w) for a in argv], capsys)
  assert code == 2 and err == [line.format(w=w)]
