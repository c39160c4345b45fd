"""Tests for segls.config: _base_ merging, overrides, validation messages, dump/load, configs/."""

from __future__ import annotations

import dataclasses
import re
import textwrap
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segls import config
from segls.config import Config, ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path, monkeypatch):
    """Run each test from its tmp_path, so messages show short relative file names."""
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    """Write dedented YAML, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load_error(path: Path, overrides=()) -> str:
    """The message of the ConfigError that loading raises."""
    with pytest.raises(ConfigError) as info:
        config.load(path, overrides)
    return str(info.value)


# --- _base_ merging ---------------------------------------------------------------------------


def test_a_file_with_only_defaults_gives_defaults(tmp_path):
    assert config.load(write(tmp_path / "c.yaml", "name: ''\n")) == Config()


def test_bases_merge_in_order_and_file_wins(tmp_path):
    write(tmp_path / "a.yaml", "data: {batch_size: 1, num_workers: 1, root: from_a}\n")
    write(tmp_path / "b.yaml", "data: {batch_size: 2, num_workers: 2}\n")
    top = write(tmp_path / "top.yaml", "_base_: [a.yaml, b.yaml]\ndata: {batch_size: 3}\n")
    data = config.load(top).data
    assert (data.batch_size, data.num_workers, data.root) == (3, 2, "from_a")


def test_nested_bases_apply_depth_first(tmp_path):
    write(tmp_path / "grand.yaml", "schedule: {max_iters: 10, log_interval: 7, power: 2.0}\n")
    write(tmp_path / "parent.yaml", "_base_: grand.yaml\nschedule: {max_iters: 20}\n")
    write(tmp_path / "sibling.yaml", "schedule: {log_interval: 9}\n")
    top = write(tmp_path / "top.yaml", "_base_: [parent.yaml, sibling.yaml]\n")
    schedule = config.load(top).schedule
    assert (schedule.max_iters, schedule.log_interval, schedule.power) == (20, 9, 2.0)


def test_mappings_merge_deeply_and_lists_replace(tmp_path):
    write(
        tmp_path / "base.yaml",
        """
        data: {crop_size: [64, 32], mean: [0.1, 0.2, 0.3]}
        model: {kwargs: {decoder_channels: [8, 8, 8, 8, 8], decoder_attention_type: scse}}
        """,
    )
    top = write(
        tmp_path / "top.yaml",
        """
        _base_: base.yaml
        data: {crop_size: [16, 16]}
        model: {kwargs: {decoder_channels: [4, 4, 4, 4, 4]}}
        """,
    )
    cfg = config.load(top)
    assert cfg.data.crop_size == [16, 16]
    assert cfg.data.mean == [0.1, 0.2, 0.3]
    assert cfg.model.kwargs == {"decoder_channels": [4] * 5, "decoder_attention_type": "scse"}


def test_delete_marker_replaces_inherited_mapping(tmp_path):
    write(tmp_path / "base.yaml", "model: {kwargs: {decoder_channels: [8, 8, 8, 8, 8]}}\n")
    top = write(
        tmp_path / "top.yaml",
        "_base_: base.yaml\nmodel: {kwargs: {_delete_: true, decoder_use_norm: false}}\n",
    )
    assert config.load(top).model.kwargs == {"decoder_use_norm": False}


def test_base_paths_are_relative_to_the_including_file(tmp_path, monkeypatch):
    write(tmp_path / "cfg/_base_/models/m.yaml", "model: {encoder: resnet34}\n")
    write(tmp_path / "cfg/_base_/mid.yaml", "_base_: models/m.yaml\n")
    write(tmp_path / "shared/extra.yaml", "runtime: {seed: 7}\n")
    top = write(tmp_path / "cfg/exp.yaml", "_base_: [_base_/mid.yaml, ../shared/extra.yaml]\n")
    monkeypatch.chdir(tmp_path / "shared")
    cfg = config.load(top)
    assert (cfg.model.encoder, cfg.runtime.seed) == ("resnet34", 7)


def test_missing_base_names_both_files(tmp_path):
    top = write(tmp_path / "top.yaml", "_base_: nothere.yaml\n")
    message = load_error(top)
    assert "top.yaml" in message and "nothere.yaml" in message


@pytest.mark.parametrize("bases", ["self", "pair"])
def test_base_cycle_is_an_error(tmp_path, bases):
    if bases == "self":
        top = write(tmp_path / "a.yaml", "_base_: a.yaml\n")
    else:
        top = write(tmp_path / "a.yaml", "_base_: [b.yaml]\n")
        write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    message = load_error(top)
    assert "cycle" in message and "a.yaml" in message
    assert bases == "self" or "b.yaml" in message


def test_diamond_bases_are_not_a_cycle(tmp_path):
    write(tmp_path / "common.yaml", "runtime: {seed: 1}\n")
    write(tmp_path / "left.yaml", "_base_: common.yaml\n")
    write(tmp_path / "right.yaml", "_base_: common.yaml\n")
    top = write(tmp_path / "top.yaml", "_base_: [left.yaml, right.yaml]\n")
    assert config.load(top).runtime.seed == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data: [1, 2\n", "not valid YAML"),
        ("- data\n", "top level is a list"),
        ("_base_: {a: 1}\n", "must be a file path or a list"),
    ],
)
def test_bad_files_are_errors_naming_the_file(tmp_path, text, expected):
    message = load_error(write(tmp_path / "bad.yaml", text))
    assert "bad.yaml" in message and expected in message


def test_missing_config_file(tmp_path):
    assert "not found" in load_error(tmp_path / "nope.yaml")


# --- overrides ----------------------------------------------------------------------------


def test_overrides_set_scalars_lists_null_and_nested_keys(tmp_path):
    base = write(
        tmp_path / "c.yaml", "model: {encoder_weights: imagenet, kwargs: {encoder_depth: 5}}\n"
    )
    cfg = config.load(
        base,
        [
            "schedule.max_iters=2000",
            "optimizer.lr=3e-4",
            "data.crop_size=[256,256]",
            "model.encoder_weights=null",
            "model.kwargs.decoder_channels=[128, 64, 32, 16, 8]",
            "data.class_names=[a, 'b c', '1']",
            "data.root=some dir/with=equals",
        ],
    )
    assert cfg.schedule.max_iters == 2000
    assert cfg.optimizer.lr == pytest.approx(3e-4)
    assert cfg.data.crop_size == [256, 256]
    assert cfg.model.encoder_weights is None
    assert cfg.model.kwargs == {"encoder_depth": 5, "decoder_channels": [128, 64, 32, 16, 8]}
    assert cfg.data.class_names == ["a", "b c", "1"]
    assert cfg.data.root == "some dir/with=equals"


def test_later_override_wins_over_earlier_and_over_files(tmp_path):
    base = write(tmp_path / "c.yaml", "runtime: {seed: 1}\n")
    assert config.load(base, ["runtime.seed=2", "runtime.seed=3"]).runtime.seed == 3


@pytest.mark.parametrize("override", ["schedule.max_iters", "=3", "a..b=1", "data.x y=1"])
def test_malformed_override_shows_the_expected_form(tmp_path, override):
    message = load_error(write(tmp_path / "c.yaml", "name: ''\n"), [override])
    assert repr(override) in message and "key.path=value" in message


def test_override_with_invalid_yaml_value(tmp_path):
    message = load_error(write(tmp_path / "c.yaml", "name: ''\n"), ["data.crop_size=[1, 2"])
    assert "data.crop_size=[1, 2" in message and "not valid YAML" in message


def test_overrides_must_be_a_list_not_a_string(tmp_path):
    with pytest.raises(TypeError, match="list of strings"):
        config.load(write(tmp_path / "c.yaml", "name: ''\n"), "runtime.seed=1")


# --- YAML scalars -------------------------------------------------------------------------


def test_yaml12_booleans_and_exponent_floats(tmp_path):
    path = write(
        tmp_path / "c.yaml",
        """
        runtime: {amp: off}
        optimizer: {lr: 1e-3, weight_decay: 5E-4}
        data: {num_classes: 4, class_names: [no, yes, on, off]}
        """,
    )
    cfg = config.load(path)
    assert cfg.runtime.amp == "off"
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (0.001, 0.0005)
    assert cfg.data.class_names == ["no", "yes", "on", "off"]


# --- unknown keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "suggestion"),
    [
        ("schedule: {max_iter: 5}\n", "schedule.max_iter", "schedule.max_iters"),
        ("data: {batch_sise: 5}\n", "data.batch_sise", "data.batch_size"),
        ("max_iters: 5\n", "max_iters", "schedule.max_iters"),
        ("data: {warmup_iter: 5}\n", "data.warmup_iter", "schedule.warmup_iters"),
        ("optimiser: {lr: 0.1}\n", "optimiser", "optimizer"),
    ],
)
def test_unknown_key_names_file_key_and_closest_key(tmp_path, text, key, suggestion):
    write(tmp_path / "base.yaml", text)
    top = write(tmp_path / "top.yaml", "_base_: base.yaml\n")
    message = load_error(top)
    assert message.startswith("base.yaml: ")
    assert f"'{key}'" in message and f"did you mean '{suggestion}'?" in message


def test_unknown_key_without_close_match_lists_valid_keys(tmp_path):
    message = load_error(write(tmp_path / "c.yaml", "model: {zzzzzz: 1}\n"))
    assert "'model.zzzzzz'" in message and "arch, encoder, encoder_weights, kwargs" in message


def test_unknown_key_from_override_names_the_override(tmp_path):
    message = load_error(write(tmp_path / "c.yaml", "name: ''\n"), ["runtime.sead=3"])
    assert "command-line override 'runtime.sead=3'" in message
    assert "did you mean 'runtime.seed'?" in message


# --- types --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "key", "shown", "expected"),
    [
        ("data.batch_size='8'", "data.batch_size", "'8'", "expected int"),
        ("data.batch_size=true", "data.batch_size", "true", "expected int"),
        ("data.num_classes=2.5", "data.num_classes", "2.5", "expected int"),
        ("data.num_classes=null", "data.num_classes", "null", "expected int"),
        ("optimizer.lr=fast", "optimizer.lr", "'fast'", "expected float"),
        ("optimizer.lr=false", "optimizer.lr", "false", "expected float"),
        ("data.crop_size=256", "data.crop_size", "256", "expected list[int]"),
        ("data.crop_size=[256, x]", "data.crop_size[1]", "'x'", "expected int"),
        ("data.class_names=[a, 2, c]", "data.class_names[1]", "2", "expected str"),
        ("data.palette=[[1, 2, 3], 4]", "data.palette[1]", "4", "expected list[int]"),
        ("data.cache=1", "data.cache", "1", "expected bool"),
        ("runtime.device=0", "runtime.device", "0", "expected str"),
        ("model.encoder_weights=3", "model.encoder_weights", "3", "expected str or null"),
        ("loss.class_weight=5", "loss.class_weight", "5", "expected list[float] or null"),
        ("loss.class_weight=[1, no]", "loss.class_weight[1]", "'no'", "expected float"),
        ("model.kwargs=[1]", "model.kwargs", "[1]", "expected mapping"),
        ("data=3", "data", "3", "expected mapping"),
    ],
)
def test_wrong_type_names_key_value_and_expected_type(tmp_path, override, key, shown, expected):
    message = load_error(write(tmp_path / "c.yaml", "name: ''\n"), [override])
    assert f"{key} = {shown} is " in message and expected in message
    assert "command-line override" in message


def test_wrong_type_in_file_names_the_file(tmp_path):
    write(tmp_path / "base.yaml", "data: {batch_size: eight}\n")
    message = load_error(write(tmp_path / "top.yaml", "_base_: base.yaml\n"))
    assert message.startswith("base.yaml: data.batch_size = 'eight' is str, expected int")


def test_ints_become_floats_and_optionals_accept_null_or_value(tmp_path):
    path = write(
        tmp_path / "c.yaml",
        """
        optimizer: {lr: 1, betas: [0, 1e-1], grad_clip: 2}
        loss: {lb_pos: null, class_weight: [1, 2, 3]}
        model: {kwargs: {decoder_channels: [1, {b: null}, 3, 4, 5]}}
        data: null
        """,
    )
    cfg = config.load(path)
    assert type(cfg.optimizer.lr) is float and cfg.optimizer.lr == 1.0
    assert all(type(b) is float for b in cfg.optimizer.betas)
    assert cfg.optimizer.grad_clip == 2.0 and type(cfg.optimizer.grad_clip) is float
    assert cfg.loss.lb_pos is None and cfg.loss.class_weight == [1.0, 2.0, 3.0]
    assert cfg.model.kwargs == {"decoder_channels": [1, {"b": None}, 3, 4, 5]}
    assert cfg.data == config.DataConfig()


# --- value checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "key", "hint"),
    [
        (["data.num_classes=1"], "data.num_classes = 1", "use 2 or more"),
        (["data.mean=[0.5, 0.5]"], "data.mean = [0.5, 0.5]", "data.in_channels = 3"),
        (["data.in_channels=1", "data.mean=[0.5]"], "data.std = ", "data.in_channels = 1"),
        (["data.std=[1, 0, 1]"], "data.std = [1.0, 0.0, 1.0]", "> 0"),
        (["data.crop_size=[256]"], "data.crop_size = [256]", "[height, width]"),
        (["data.crop_size=[0, 256]"], "data.crop_size = [0, 256]", "positive"),
        (["data.scale_range=[2.0, 1.0]"], "data.scale_range = [2.0, 1.0]", "low <= high"),
        (["data.hflip=1.5"], "data.hflip = 1.5", "[0, 1]"),
        (["data.photometric=-0.1"], "data.photometric = -0.1", "[0, 1]"),
        (["data.format=coco"], "data.format = 'coco'", "folder, voc, cityscapes, ade20k"),
        (["data.cityscapes_labels=ids"], "data.cityscapes_labels = 'ids'", "labelIds"),
        (["data.ignore_index=2"], "data.ignore_index = 2", "outside 0..2"),
        (["data.class_names=[a, b]"], "data.class_names = ['a', 'b']", "one per class"),
        (["data.palette=[[0, 0, 0]]"], "data.palette = [[0, 0, 0]]", "one per class"),
        (["data.palette=[[0,0],[0,0,0],[0,0,0]]"], "data.palette = ", "[r, g, b]"),
        (["data.batch_size=0"], "data.batch_size = 0", "1 or more"),
        (["data.num_workers=-1"], "data.num_workers = -1", "0 or more"),
        (["data.root=''"], "data.root = ''", "non-empty"),
        (["model.encoder_weights=''"], "model.encoder_weights = ''", "null"),
        (["model.kwargs.classes=4"], "model.kwargs.classes = 4", "data.num_classes"),
        (["loss.lb_smooth=1.0"], "loss.lb_smooth = 1.0", "[0, 1)"),
        (["loss.lb_pos=1.5", "loss.lb_neg=0"], "loss.lb_pos = 1.5", "[0, 1]"),
        (["loss.lb_pos=0.9"], "loss.lb_pos = 0.9", "together"),
        (["loss.lb_neg=0.1"], "loss.lb_neg = 0.1", "together"),
        (["loss.lb_pos=0.1", "loss.lb_neg=0.2"], "loss.lb_pos = 0.1", ">= loss.lb_neg = 0.2"),
        (["loss.class_weight=[1, 2]"], "loss.class_weight = [1.0, 2.0]", "one per class"),
        (["loss.class_weight=[1, -2, 1]"], "loss.class_weight = ", ">= 0"),
        (["loss.class_weight=[1, .inf, 1]"], "loss.class_weight = [1.0, inf, 1.0]", "finite"),
        (["loss.backend=cuda"], "loss.backend = 'cuda'", "auto, torch, triton"),
        (["loss.upsample=inside"], "loss.upsample = 'inside'", "outside, fused"),
        (["loss.upsample=fused"], "loss.upsample = 'fused'", "Unet decodes to full resolution"),
        (
            ["loss.upsample=fused", "model.arch=FPN", "model.kwargs.upsampling=4"],
            "model.kwargs.upsampling = 4",
            "clashes with loss.upsample=fused",
        ),
        (["optimizer.type=adam"], "optimizer.type = 'adam'", "adamw, sgd"),
        (["optimizer.lr=0"], "optimizer.lr = 0.0", "> 0"),
        (["optimizer.momentum=1"], "optimizer.momentum = 1.0", "[0, 1)"),
        (["optimizer.betas=[0.9]"], "optimizer.betas = [0.9]", "[beta1, beta2]"),
        (["optimizer.grad_clip=0"], "optimizer.grad_clip = 0.0", "null"),
        (["schedule.max_iters=0"], "schedule.max_iters = 0", "1 or more"),
        (["schedule.warmup_iters=2000"], "schedule.warmup_iters = 2000", "max_iters = 1000"),
        (["schedule.warmup_ratio=2"], "schedule.warmup_ratio = 2.0", "[0, 1]"),
        (["schedule.power=.nan"], "schedule.power = nan", "NaN and inf are not allowed"),
        (["schedule.min_lr=0.1"], "schedule.min_lr = 0.1", "optimizer.lr = 0.001"),
        (["schedule.eval_interval=0"], "schedule.eval_interval = 0", "1 or more"),
        (["schedule.log_interval=-5"], "schedule.log_interval = -5", "1 or more"),
        (["runtime.device=gpu"], "runtime.device = 'gpu'", "cuda:N"),
        (["runtime.device=cuda:x"], "runtime.device = 'cuda:x'", "cuda:N"),
        (["runtime.amp=fp8"], "runtime.amp = 'fp8'", "off, fp16, bf16"),
        (["runtime.seed=-1"], "runtime.seed = -1", "2**32"),
        (["runtime.num_threads=-1"], "runtime.num_threads = -1", "0 or more"),
    ],
)
def test_bad_values_name_key_value_and_remedy(tmp_path, overrides, key, hint):
    message = load_error(write(tmp_path / "c.yaml", "name: ''\n"), overrides)
    assert key in message and hint in message
    assert "command-line override" in message or "(the default)" in message


def test_good_edge_values_pass(tmp_path):
    overrides = [
        "data.hflip=1",
        "data.scale_range=[1, 1]",
        "data.ignore_index=-100",
        "loss.lb_smooth=0",
        "runtime.device=cuda:3",
        "schedule.warmup_iters=1000",
        "schedule.min_lr=0.001",
        "loss.upsample=fused",
        "model.arch=deeplabv3+",
        "model.kwargs.upsampling=1",
    ]
    cfg = config.load(write(tmp_path / "c.yaml", "name: ''\n"), overrides)
    assert cfg.runtime.device == "cuda:3" and cfg.data.ignore_index == -100


def test_all_bad_values_are_reported_together_with_their_files(tmp_path):
    write(tmp_path / "data.yaml", "data: {in_channels: 2, mean: [0.5, 0.5], std: [1, 1]}\n")
    top = write(tmp_path / "top.yaml", "_base_: data.yaml\nruntime: {amp: fp32}\n")
    lines = load_error(top, ["data.mean=[0.5]"]).splitlines()
    assert len(lines) == 2
    assert any(line.startswith("top.yaml: runtime.amp = 'fp32'") for line in lines)
    assert any(line.startswith("command-line override 'data.mean=[0.5]'") for line in lines)


def test_validate_and_from_dict_check_python_made_configs():
    cfg = Config()
    config.validate(cfg)
    cfg.data.num_classes = 1
    with pytest.raises(ConfigError, match="data.num_classes = 1"):
        config.validate(cfg)
    assert config.from_dict(config.to_dict(Config())) == Config()
    with pytest.raises(ConfigError, match="did you mean 'data.num_classes'"):
        config.from_dict({"data": {"num_class": 3}})


# --- dump / load --------------------------------------------------------------------------


def test_dump_round_trip_of_a_real_config(tmp_path):
    cfg = config.load(CONFIGS / "unet_resnet18_scratch_64x64_600.yaml")
    cfg.model.kwargs = {"decoder_channels": [64, 32, 16, 8, 4], "decoder_use_norm": {"x": "1e-3"}}
    cfg.data.palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    out = tmp_path / "work" / "config.yaml"
    config.dump(cfg, out)
    assert config.load(out) == cfg
    assert yaml.safe_load(out.read_text()) == config.to_dict(cfg)
    assert sorted(p.name for p in out.parent.iterdir()) == ["config.yaml"]


def test_dump_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    out = tmp_path / "config.yaml"
    config.dump(Config(), out)
    before = out.read_text()
    unrepresentable = Config()
    unrepresentable.model.kwargs = {"bad": object()}
    with pytest.raises(yaml.YAMLError):
        config.dump(unrepresentable, out)

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("segls.io.os.replace", failing_replace)
    changed = Config()
    changed.runtime.seed = 5
    with pytest.raises(OSError, match="disk full"):
        config.dump(changed, out)
    assert out.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


_scalar_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    names=st.lists(_scalar_text, min_size=3, max_size=3, unique=True),
    lr=st.floats(min_value=1e-12, max_value=1e3),
    kwargs=st.dictionaries(
        st.sampled_from(["decoder_use_norm", "decoder_interpolation", "decoder_attention_type"]),
        st.one_of(_scalar_text, st.integers()),
    ),
    crop=st.lists(st.integers(1, 10_000), min_size=2, max_size=2),
)
def test_dump_load_round_trip_property(tmp_path, names, lr, kwargs, crop):
    cfg = Config()
    cfg.data.class_names, cfg.data.crop_size = names, crop
    cfg.optimizer.lr, cfg.model.kwargs = lr, kwargs
    out = tmp_path / "c.yaml"
    config.dump(cfg, out)
    assert config.load(out) == cfg
    assert yaml.safe_load(out.read_text()) == config.to_dict(cfg)


# --- the shipped configs ------------------------------------------------------------------

RUNNABLE = sorted(CONFIGS.glob("*.yaml"))
TAIL_RE = re.compile(r"(?P<dataset>[a-z0-9]+)_(?P<h>\d+)x(?P<w>\d+)_(?P<n>\d+)(?P<k>k?)")


def test_there_are_runnable_configs():
    assert CONFIGS / "unet_resnet18_scratch_64x64_600.yaml" in RUNNABLE and len(RUNNABLE) >= 4


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: p.name)
def test_every_config_loads_and_its_name_matches_it(path):
    cfg = config.load(path)
    prefix = f"{cfg.model.arch.lower()}_{cfg.model.encoder}_"
    assert path.stem.startswith(prefix), f"{path.name} should start with {prefix}"
    match = TAIL_RE.fullmatch(path.stem[len(prefix) :])
    assert match, f"{path.name} should end with {{dataset}}_{{H}}x{{W}}_{{N}}k or _{{N}}"
    assert cfg.data.crop_size == [int(match["h"]), int(match["w"])]
    assert cfg.schedule.max_iters == int(match["n"]) * (1000 if match["k"] else 1)


@pytest.mark.parametrize("path", sorted((CONFIGS / "_base_").rglob("*.yaml")), ids=str)
def test_every_base_file_loads_alone(path):
    config.load(path)


def test_model_bases_name_architectures_encoders_and_kwargs_that_segls_models_accepts():
    from segls.models import factory

    for path in sorted((CONFIGS / "_base_" / "models").glob("*.yaml")):
        model = config.load(path).model
        arch_class = factory.arch_class_for(model.arch)
        factory.resolve_encoder(model.encoder)
        factory.check_kwargs(arch_class, model.kwargs)


def test_readme_key_table_matches_the_dataclasses():
    rows = re.findall(
        r"^\| `([a-z_]+(?:\.[a-z_0-9]+)?)` \| ([^|]+) \| `([^`]*)` \|",
        (CONFIGS / "README.md").read_text(),
        re.M,
    )
    documented = {key: (kind.strip(), default) for key, kind, default in rows}
    expected = {"name": (str, "")}
    for section_name, section in typing.get_type_hints(Config).items():
        if section_name == "name":
            continue
        hints = typing.get_type_hints(section)
        for item in dataclasses.fields(section):
            default = (
                item.default_factory() if item.default is dataclasses.MISSING else item.default
            )
            expected[f"{section_name}.{item.name}"] = (hints[item.name], default)
    assert list(documented) == list(expected)
    names = {
        int: "int", float: "float", str: "str", bool: "bool", dict: "mapping",
        list[str]: "list[str]", list[int]: "list[int]", list[float]: "list[float]",
        list[list[int]]: "list[list[int]]", str | None: "str or null",
        float | None: "float or null", list[float] | None: "list[float] or null",
    }  # fmt: skip
    for key, (hint, default) in expected.items():
        kind, default_text = documented[key]
        assert kind == names[hint], key
        assert yaml.safe_load(default_text if default_text != "off" else "'off'") == default, key


def float_keys() -> list[tuple[str, object]]:
    """(key path, hint) of every field of the schema that holds floats, found from the hints."""
    found = []
    for section, section_type in typing.get_type_hints(Config).items():
        for name, hint in typing.get_type_hints(section_type).items():
            inner = [arg for arg in typing.get_args(hint) if arg is not type(None)] or [hint]
            if float in (inner[0], *typing.get_args(inner[0])):
                found.append((f"{section}.{name}", inner[0]))
    return found


def test_the_schema_has_the_float_keys_this_test_expects():
    keys = dict(float_keys())
    assert {"data.mean", "optimizer.lr", "loss.class_weight", "eval.scales"} <= keys.keys()
    assert len(keys) >= 20


@pytest.mark.parametrize("key", [key for key, _ in float_keys()])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_every_float_key_refuses_nan_and_inf(key, bad):
    tree = config.to_dict(Config())
    section, name = key.split(".")
    value = tree[section][name]
    if value is None:  # loss.class_weight (one per class), lb_pos/lb_neg, grad_clip, ema_decay
        value = [1.0, 1.0, bad] if name == "class_weight" else bad
    elif isinstance(value, list):
        value = [bad, *value[1:]]
    else:
        value = bad
    tree[section][name] = value
    with pytest.raises(ConfigError) as info:
        config.from_dict(tree)
    assert str(info.value) == (
        f"config dict: {key} = {value!r}: give finite numbers: NaN and inf are not allowed"
    )


def test_a_nan_override_is_refused_naming_the_override(tmp_path):
    message = load_error(write(tmp_path / "c.yaml", "name: ''\n"), ["data.mean=[.nan,0.3,0.2]"])
    assert message == (
        "command-line override 'data.mean=[.nan,0.3,0.2]': data.mean = [nan, 0.3, 0.2]: "
        "give finite numbers: NaN and inf are not allowed"
    )
