import copy
import hashlib
import json

import pytest

from mpqdm.core.bitplan import BitPlan, FloatLayer, Group, LayerPlan
from mpqdm.core.errors import UserError

SHA = hashlib.sha256(b"model").hexdigest()
OTHER_SHA = hashlib.sha256(b"other").hexdigest()
# order (3, 0, 2, 1, 4): positions 0..2 are channels 3 and 0 at 3 bits, the rest at 1 bit
MIXED = LayerPlan((3, 0, 2, 1, 4), (Group(0, 2, 3), Group(2, 5, 1)), abits=4)
SHAPES = {"conv_in": 8, "down.conv1": 5, "attn.to_q": 16}


def make_plan(**kw) -> BitPlan:
    layers = {"conv_in": LayerPlan.uniform(8, 8, 8), "down.conv1": MIXED, "attn.to_q": FloatLayer()}
    args = dict(model_sha256=SHA, model_class="UNet2DModel", group_size=16, smoothing=True, layers=layers)
    args.update(kw)
    return BitPlan(**args)


def plan_json() -> dict:
    return make_plan().to_json()


# --- round trips and the written form ---

def test_json_round_trip():
    plan = make_plan()
    assert BitPlan.from_json(plan.to_json()) == plan
    assert BitPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan


def test_to_json_forms():
    d = plan_json()
    assert d["format"] == "mpqdm.bitplan" and d["version"] == 1
    assert d["model"] == {"sha256": SHA, "class": "UNet2DModel"}
    assert d["layers"]["conv_in"] == {"wbits": 8, "abits": 8, "c_out": 8}
    assert d["layers"]["attn.to_q"] == {"float": True}
    assert d["layers"]["down.conv1"] == {
        "order": [3, 0, 2, 1, 4],
        "groups": [{"channels": [0, 2], "wbits": 3}, {"channels": [2, 5], "wbits": 1}], "abits": 4}
    # one group but a permuted order keeps the full form
    permuted = LayerPlan((1, 0), (Group(0, 2, 4),), 4)
    assert "order" in make_plan(layers={"x": permuted}).to_json()["layers"]["x"]


def test_file_round_trip(tmp_path):
    plan = make_plan()
    path = tmp_path / "quant_plan.json"
    plan.save(path)
    assert BitPlan.load(path) == plan
    plan.save(path)  # overwrite in place
    assert BitPlan.load(path) == plan
    assert [p.name for p in tmp_path.iterdir()] == ["quant_plan.json"]  # no temp files left


def test_compact_entry_without_c_out_takes_model_shapes(tmp_path):
    d = plan_json()
    d["layers"]["conv_in"] = {"wbits": 8, "abits": 8}
    path = tmp_path / "quant_plan.json"
    path.write_text(json.dumps(d))
    assert BitPlan.load(path, layer_shapes=SHAPES) == make_plan()
    with pytest.raises(UserError, match="'conv_in'.*no 'c_out'.*Possible solutions"):
        BitPlan.load(path)
    with pytest.raises(UserError, match="'conv_in'.*c_out is 8 in the plan but 4 in the model"):
        BitPlan.from_json(plan_json(), layer_shapes={**SHAPES, "conv_in": 4})


# --- per-layer views ---

def test_bits_per_channel_follows_order():
    assert MIXED.c_out == 5
    assert MIXED.bits_per_channel() == (3, 1, 1, 3, 1)


def test_layer_avg_wbits():
    assert MIXED.avg_wbits == pytest.approx((2 * 3 + 3 * 1) / 5)


def test_uniform():
    p = LayerPlan.uniform(4, 2, 4)
    assert p.order == (0, 1, 2, 3) and p.groups == (Group(0, 4, 2),) and p.abits == 4
    assert p.bits_per_channel() == (2, 2, 2, 2) and p.avg_wbits == 2.0
    assert p.is_uniform() and not MIXED.is_uniform()


def test_plan_avg_wbits_weights_channels():
    plan = make_plan()
    # conv_in: 8 ch x 8 bits x 9 weights; down.conv1: 9 bit-channels x 72 weights; float layer ignored
    got = plan.avg_wbits({"conv_in": 9, "down.conv1": 72})
    assert got == pytest.approx((8 * 8 * 9 + 9 * 72) / (8 * 9 + 5 * 72))
    with pytest.raises(UserError, match="no weight count for layer 'down.conv1'"):
        plan.avg_wbits({"conv_in": 9})


def test_lists_are_stored_as_tuples():
    p = LayerPlan([1, 0], [Group(0, 2, 2)], 8)
    assert p == LayerPlan((1, 0), (Group(0, 2, 2),), 8)


# --- errors ---

@pytest.mark.parametrize("bits", [0, 9, -1, True, 2.0])
def test_group_bits_out_of_range(bits):
    with pytest.raises(UserError, match="wbits.*Possible solutions"):
        Group(0, 4, bits)


@pytest.mark.parametrize("abits", [0, 9])
def test_abits_out_of_range(abits):
    with pytest.raises(UserError, match=f"abits is {abits}, not in 1..8"):
        LayerPlan.uniform(4, 4, abits)


def test_bits_error_in_json_names_layer():
    d = plan_json()
    d["layers"]["down.conv1"]["groups"][1]["wbits"] = 9
    with pytest.raises(UserError, match=r"layer 'down.conv1'.*wbits of group \[2, 5\) is 9, not in 1..8"):
        BitPlan.from_json(d)


def test_wrong_format():
    d = plan_json()
    d["format"] = "something.else"
    with pytest.raises(UserError, match="format is 'something.else', expected 'mpqdm.bitplan'"):
        BitPlan.from_json(d)
    with pytest.raises(UserError, match="format is 'list'"):
        BitPlan.from_json([])


@pytest.mark.parametrize("version", [2, 0, None, "1"])
def test_unsupported_version(version):
    d = plan_json()
    d["version"] = version
    match = rf"version {version!r}; this mpqdm reads version 1.*Possible solutions"
    with pytest.raises(UserError, match=match):
        BitPlan.from_json(d)


@pytest.mark.parametrize("groups, match", [
    ([Group(0, 2, 3), Group(3, 5, 1)], "gap at position 2"),
    ([Group(0, 3, 3), Group(2, 5, 1)], "overlap at position 2"),
    ([Group(0, 2, 3), Group(2, 6, 1)], r"group \[2, 6\) is out of range: the layer has 5 channels"),
    ([Group(2, 5, 1), Group(0, 2, 3)], "not sorted"),
    ([Group(0, 2, 3), Group(2, 4, 1)], "cover positions 0..4 but the layer has 5 channels"),
    ([Group(1, 5, 3)], "gap at position 0"),
    ([], "cover positions 0..0"),
])
def test_groups_must_cover_exactly(groups, match):
    with pytest.raises(UserError, match=match + ".*Possible solutions"):
        LayerPlan((3, 0, 2, 1, 4), groups, 4)


def test_group_gap_in_json_names_layer():
    d = plan_json()
    d["layers"]["down.conv1"]["groups"][1]["channels"] = [3, 5]
    with pytest.raises(UserError, match="layer 'down.conv1'.*gap at position 2"):
        BitPlan.from_json(d)


@pytest.mark.parametrize("order, match", [
    ((0, 1, 1, 3), r"not a permutation of 0..3 \(missing \[2\]"),
    ((0, 1, 2, 4), "order entry is 4, not in 0..3"),
    ((0, -1, 2, 3), "order entry is -1"),
    ((), "order is empty"),
])
def test_order_must_be_permutation(order, match):
    with pytest.raises(UserError, match=match):
        LayerPlan(order, (Group(0, 4, 2),), 4)


def test_plan_names_layer_model_lacks():
    with pytest.raises(UserError, match=r"layers the model lacks: \['attn.to_q'\].*Possible solutions"):
        make_plan().validate_against({"conv_in": 8, "down.conv1": 5})


def test_plan_misses_layer_model_has():
    with pytest.raises(UserError, match=r"misses layers the model has: \['up.conv2'\].*Possible solutions"):
        make_plan().validate_against({**SHAPES, "up.conv2": 4})


def test_channel_count_mismatch():
    with pytest.raises(UserError, match="'down.conv1' has 5 channels in the plan, 6 in the model"):
        make_plan().validate_against({**SHAPES, "down.conv1": 6})


def test_model_hash_mismatch():
    plan = make_plan()
    plan.validate_against(SHAPES, model_sha256=SHA)
    plan.validate_against(SHAPES)
    with pytest.raises(UserError, match=f"plan is for model {SHA[:12]}.*not this model.*Possible solutions"):
        plan.validate_against(SHAPES, model_sha256=OTHER_SHA)


def test_bad_model_hash():
    with pytest.raises(UserError, match="sha256 'abc' is not 64 lowercase hex digits"):
        make_plan(model_sha256="abc")


@pytest.mark.parametrize("entry", [{}, {"abits": 4}, {"float": False}, {"float": True, "wbits": 4},
                                   {"wbits": 4, "abits": 4, "extra": 1}, {"order": [0], "abits": 4}, 8, None])
def test_entry_neither_quantized_nor_float(entry):
    d = plan_json()
    d["layers"]["conv_in"] = copy.deepcopy(entry)
    with pytest.raises(UserError, match="layer 'conv_in'.*neither a quantized layer nor a float layer"):
        BitPlan.from_json(d)


def test_layer_object_of_wrong_type():
    with pytest.raises(UserError, match="layer 'x' is 8"):
        make_plan(layers={"x": 8})


@pytest.mark.parametrize("group", [{"channels": [0, 5]}, {"channels": 5, "wbits": 2}, [0, 5, 2]])
def test_malformed_group(group):
    d = plan_json()
    d["layers"]["down.conv1"]["groups"] = [group]
    with pytest.raises(UserError, match="layer 'down.conv1'.*malformed"):
        BitPlan.from_json(d)


def test_malformed_json_file(tmp_path):
    path = tmp_path / "quant_plan.json"
    path.write_text('{"format": "mpqdm.bitplan", "version": 1,')
    with pytest.raises(UserError, match="quant_plan.json' is not valid JSON.*line 1.*Possible solutions"):
        BitPlan.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="cannot read bit plan.*nope.json"):
        BitPlan.load(tmp_path / "nope.json")


def test_load_error_names_file(tmp_path):
    d = plan_json()
    d["version"] = 7
    path = tmp_path / "plan7.json"
    path.write_text(json.dumps(d))
    with pytest.raises(UserError, match="plan7.json.*version 7; this mpqdm reads version 1"):
        BitPlan.load(path)
