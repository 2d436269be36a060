"""The method schema every front end reads: help text, value lists, sweep grids, the
laspa-mix word rule."""

import pytest

from laspa.bench.peers import DiffEditPeerParams
from laspa.errors import ParameterError
from laspa.methods.options import (
    describe,
    method_options,
    mix_words,
    option_help,
    parse_values,
    sweep_grid,
)


def test_option_help_reads_ranges_and_each_methods_default():
    assert option_help("K") == "[0, 1000]; default 200"
    beta = option_help("beta")
    assert beta.startswith("[0, 1]; default 0.9 (laspa-eps, laspa-mix, laspa-x0)")
    assert beta.endswith("0.7 (laspa-input)")
    assert option_help("strength") == "(0, 1]; default 0.5 (instdiffedit), 0.8 (sdedit)"
    assert option_help("beta_schedule") == "constant|linear; default constant"
    assert option_help("seed") == ""  # not a method option


def test_specs_follow_the_params_dataclass():
    specs = {spec.name: spec for spec in method_options("laspa-input")}
    assert (specs["beta"].default, specs["beta"].low, specs["beta"].high) == (0.7, 0.0, 1.0)
    assert specs["K"].python_type is int and specs["noise"].choices == ("fixed", "fresh")
    peer = {spec.name: spec for spec in describe(DiffEditPeerParams)}
    assert peer["guidance"].default == 7.5 and peer["num_maps_per_mask"].kind == "slider"


def test_value_lists_parse_one_way():
    assert parse_values(" 100, 200,,400 ", int, "bad {item}") == [100, 200, 400]
    assert parse_values(None, int, "bad {item}") == []
    with pytest.raises(ParameterError, match="^--K: 'x' in '1,x'$"):
        parse_values("1,x", int, "--K: {item!r} in {text!r}")


def test_sweep_grid_is_row_by_row():
    cells = sweep_grid({"steps": 2}, ("K", [1, 2]), ("beta", [0.1, 0.2, 0.3]))
    assert [(c["K"], c["beta"]) for c in cells] == [
        (1, 0.1), (1, 0.2), (1, 0.3), (2, 0.1), (2, 0.2), (2, 0.3)
    ]  # fmt: skip
    assert all(c["steps"] == 2 for c in cells)
    assert sweep_grid({}, ("seed", [3, 4])) == [{"seed": 3}, {"seed": 4}]


def test_mix_words_rule():
    assert mix_words("laspa-mix", "cat", None) == {"subject": "cat"}
    assert mix_words("laspa-mix", None, "sky") == {"change": "sky", "keep": "rest"}
    assert mix_words("laspa-x0", None, "sky") == {"change": "sky"}  # refused by the method
    with pytest.raises(ParameterError, match="not both"):
        mix_words("laspa-mix", "cat", "sky")


def test_cli_help_states_the_schemas_defaults_and_ranges(monkeypatch):
    """The numbers in ``laspa edit --help`` come from the Params: change a default there
    and the help follows (no copy of it in the CLI)."""
    from typer.testing import CliRunner

    from laspa.cli import app
    from laspa.methods.laspa import LaspaParams

    def help_text() -> str:
        return CliRunner().invoke(app, ["edit", "--help"], terminal_width=300).output

    assert "align while t > K (lower K: more preservation) ([0, 1000]; default 200)" in help_text()
    field = LaspaParams.__dataclass_fields__["K"]
    monkeypatch.setattr(field, "default", 300)
    assert "align while t > K (lower K: more preservation) ([0, 1000]; default 300)" in help_text()


# ------------------------------------------------------------------ one Params build (#29, #30)
def test_aliases_belong_to_the_params_so_every_front_end_means_the_same():
    from laspa.methods.base import make_params

    assert make_params("laspa-local", {"change": "sofa"}).region == "change"
    assert make_params("laspa-mix", {"change": "sofa"}).keep == "rest"
    assert make_params("laspa-mix", {"subject": "cat"}).keep == "subject"
    with pytest.raises(ParameterError, match="not both"):
        make_params("laspa-mix", {"subject": "cat", "change": "sofa"})


@pytest.mark.parametrize(
    ("options", "sampler", "refusal"),
    [
        ({"sampler": "lcm", "gamma": 0.5}, None, "gamma acts only with the tcd sampler"),
        ({"gamma": 0.5}, "ancestral", "this edit's is ancestral"),
        ({"sampler": "ddim", "step_noise": "fresh"}, None, "step_noise acts only with"),
        ({"step_noise": "fixed"}, "flow", "this edit's is flow"),
        ({"K": "200"}, None, "K must be a whole number, got '200'"),
        ({"K": None}, None, "K must be a whole number, got None"),
        ({"beta": True}, None, "beta must be a number, got True"),
    ],
)
def test_options_that_cannot_act_or_are_mistyped_are_refused(options, sampler, refusal):
    from laspa.methods.base import make_params

    with pytest.raises(ParameterError, match=refusal):
        make_params("laspa-x0", options, sampler=sampler)


def test_an_option_at_its_default_or_able_to_act_is_taken():
    from laspa.methods.base import make_params

    assert make_params("laspa-x0", {"sampler": "lcm", "gamma": 0.3}).gamma == 0.3  # the default
    assert make_params("laspa-x0", {"sampler": "tcd", "gamma": 0.5}).gamma == 0.5
    assert make_params("laspa-x0", {"gamma": 0.5}).gamma == 0.5  # auto: not known yet
    assert make_params("laspa-x0", {"beta": 1}).beta == 1.0 and isinstance(
        make_params("laspa-x0", {"beta": 1}).beta, float
    )
