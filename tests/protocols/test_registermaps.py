"""Register maps decode the manuals' encodings to the right physical values (golden vectors).

Each vector is a raw register dump written by hand from the datasheet's encoding (IEEE 754
float32 bit patterns for Eastron and Schneider floats, scaled integers for ABB, int64 Wh for
Schneider energy), not produced by our encoder, so an encoder/decoder pair that agree with
each other but not with the meter would fail here.
"""

from __future__ import annotations

import math
from importlib import resources

import pytest

from protocols.errors import DecodeError, RegisterMapError
from protocols.meters import (
    QUANTITY_BOUNDS,
    Quantity,
    available_models,
    decode_blocks,
    decode_registers,
    encode_registers,
    load_map,
    parse_map_text,
    plan_blocks,
)
from protocols.meters.registermap import parse_map

Q = Quantity


def load_map_text(model: str) -> str:
    return resources.files("protocols.meters").joinpath(f"{model}.toml").read_text("utf-8")


def words_at(image: dict[int, int], start: int, count: int) -> list[int]:
    return [image[a] for a in range(start, start + count)]


def dump(pairs: dict[int, list[int]], start: int, count: int, fill: int = 0) -> list[int]:
    """A register dump of ``count`` words from ``start``: given words, ``fill`` elsewhere."""
    out = [fill] * count
    for address, words in pairs.items():
        out[address - start : address - start + len(words)] = words
    return out


def test_every_catalogue_model_ships_with_a_source() -> None:
    assert set(available_models()) == {
        "sdm120",
        "sdm630",
        "sdm72d",
        "abb_b23",
        "iem3155",
        "mfm383a",
        "em6400ng",
        "lgplus",
        "em2m",
        "em4m",
    }
    for model in available_models():
        register_map = load_map(model)
        assert register_map.source.strip(), model
        assert Q.ENERGY_IMPORT_WH in register_map.by_quantity


def test_sdm630_golden_float32_kwh_scaled_to_wh() -> None:
    raw = dump(
        {
            0x0000: [0x4366, 0x0000],  # L1 voltage 230.0 V
            0x0006: [0x4200, 0x0000],  # L1 current 32.0 A
            0x0034: [0x45E6, 0x0000],  # total system power 7360.0 W
            0x003E: [0x3F7D, 0x70A4],  # total power factor 0.99
            0x0046: [0x4248, 0x0000],  # frequency 50.0 Hz
            0x0048: [0x449A, 0x5000],  # import active energy 1234.5 kWh
        },
        0,
        76,
    )
    values = decode_registers(load_map("sdm630"), 0, raw)
    assert values[Q.VOLTAGE_L1_V] == 230.0
    assert values[Q.CURRENT_L1_A] == 32.0
    assert values[Q.POWER_W] == 7360.0
    assert values[Q.POWER_FACTOR] == pytest.approx(0.99, abs=1e-6)
    assert values[Q.FREQUENCY_HZ] == 50.0
    # The manual gives kWh; the map scales to Wh. 1234.5 kWh is exact in float32.
    assert values[Q.ENERGY_IMPORT_WH] == 1_234_500.0
    assert values[Q.VOLTAGE_L2_V] == 0.0  # zero bits decode to zero, not "missing"


@pytest.mark.parametrize("model", ["sdm120", "sdm72d"])
def test_other_eastron_models_scale_energy_like_sdm630(model: str) -> None:
    # Public drivers disagree on SDM72/SDM120 energy scaling (DESIGN.md §8); the manuals
    # all give float32 kWh at 30073 (address 0x48).
    raw = dump({0x0048: [0x449A, 0x5000], 0x000C: [0x45E6, 0x0000]}, 0, 76)
    values = decode_registers(load_map(model), 0, raw)
    assert values[Q.ENERGY_IMPORT_WH] == 1_234_500.0
    assert values[Q.POWER_W if model == "sdm120" else Q.POWER_L1_W] == 7360.0


def test_abb_b23_golden_scaled_integers() -> None:
    register_map = load_map("abb_b23")
    energy = decode_registers(
        register_map,
        0x5000,
        # import 123456789 x 0.01 kWh (u64), export "not available" (all ones)
        [0x0000, 0x0000, 0x075B, 0xCD15, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF],
    )
    assert energy == {Q.ENERGY_IMPORT_WH: 1_234_567_890.0}
    raw = dump(
        {
            0x5B00: [0x0000, 0x08FD],  # U L1-N 2301 x 0.1 V
            0x5B0C: [0x0000, 0x0C80],  # I L1 3200 x 0.01 A
            0x5B14: [0xFFFD, 0xB610],  # P total -150000 x 0.01 W (exporting)
            0x5B2C: [0x1386],  # f 4998 x 0.01 Hz
            0x5B3A: [0xFE0C],  # PF -500 x 0.001
        },
        0x5B00,
        59,
    )
    values = decode_registers(register_map, 0x5B00, raw)
    assert values[Q.VOLTAGE_L1_V] == pytest.approx(230.1)
    assert values[Q.CURRENT_L1_A] == pytest.approx(32.0)
    assert values[Q.POWER_W] == pytest.approx(-1500.0)
    assert values[Q.FREQUENCY_HZ] == pytest.approx(49.98)
    assert values[Q.POWER_FACTOR] == pytest.approx(-0.5)


def test_iem3155_golden_one_based_registers_kw_and_int64_wh() -> None:
    register_map = load_map("iem3155")
    # Register 3204 (one-based, per the manual) is address 3203.
    energy = decode_registers(register_map, 3203, [0, 0, 0x000F, 0x1206, 0x8000, 0, 0, 0])
    assert energy == {Q.ENERGY_IMPORT_WH: 987_654.0}  # export reads "not available"
    raw = dump({2999: [0x4200, 0x0000], 3059: [0x40EC, 0xCCCD]}, 2999, 112, fill=0xFFFF)
    values = decode_registers(register_map, 2999, raw)
    assert values[Q.CURRENT_L1_A] == 32.0
    assert values[Q.POWER_W] == pytest.approx(7400.0, abs=0.01)  # 7.4 kW in float32
    # 0xFFFF fill words are NaN floats: "not available", so absent rather than NaN.
    assert Q.CURRENT_L2_A not in values
    assert all(math.isfinite(v) for v in values.values())


def test_mfm383a_golden_input_registers_kw_and_kwh() -> None:
    """Selec MFM383A: input registers 30001-30060, float32 high word first (factory MSRF),
    powers in kW and energy in kWh; one frame holds the whole map."""
    register_map = load_map("mfm383a")
    raw = dump(
        {
            0: [0x4366, 0x0000],  # 30001 V1N 230.0 V
            8: [0x43CF, 0x8000],  # 30009 V12 415.0 V
            16: [0x4200, 0x0000],  # 30017 I1 32.0 A
            24: [0x4020, 0x0000],  # 30025 kW1 2.5 kW
            42: [0x40EB, 0x851F],  # 30043 total kW 7.36 kW
            54: [0x3F7D, 0x70A4],  # 30055 average PF 0.99
            56: [0x4247, 0xEB85],  # 30057 frequency 49.98 Hz
            58: [0x449A, 0x5000],  # 30059 kWh 1234.5 kWh
        },
        0,
        60,
    )
    values = decode_registers(register_map, 0, raw)
    assert values[Q.VOLTAGE_L1_V] == 230.0
    assert values[Q.VOLTAGE_L1_L2_V] == 415.0
    assert values[Q.CURRENT_L1_A] == 32.0
    assert values[Q.POWER_L1_W] == 2500.0
    assert values[Q.POWER_W] == pytest.approx(7360.0, abs=0.01)  # 7.36 kW in float32
    assert values[Q.POWER_FACTOR] == pytest.approx(0.99, abs=1e-6)
    assert values[Q.FREQUENCY_HZ] == pytest.approx(49.98, abs=1e-5)
    assert values[Q.ENERGY_IMPORT_WH] == 1_234_500.0
    assert [(b.label, len(b.registers)) for b in plan_blocks(register_map)] == [("input 0-59", 21)]


def test_em6400ng_golden_one_based_holding_registers() -> None:
    """Schneider EM6400NG: registers documented one-based (3060 is address 3059), holding,
    float32 high word first, kW and kWh; undefined words read 0xFFFF (NaN: not available)."""
    register_map = load_map("em6400ng")
    # Register 2700 Active Energy Delivered 1234.5 kWh; 2702 (received) not available.
    energy = decode_registers(register_map, 2699, [0x449A, 0x5000, 0xFFFF, 0xFFFF])
    assert energy == {Q.ENERGY_IMPORT_WH: 1_234_500.0}
    raw = dump(
        {
            2999: [0x4200, 0x0000],  # register 3000 I1 32.0 A
            3019: [0x43CF, 0x8000],  # register 3020 V L1-L2 415.0 V
            3027: [0x4366, 0x0000],  # register 3028 V L1-N 230.0 V
            3059: [0x40EC, 0xCCCD],  # register 3060 P total 7.4 kW
            3109: [0x4248, 0x0000],  # register 3110 frequency 50.0 Hz
        },
        2999,
        112,
        fill=0xFFFF,
    )
    values = decode_registers(register_map, 2999, raw)
    assert values == {
        Q.CURRENT_L1_A: 32.0,
        Q.VOLTAGE_L1_L2_V: 415.0,
        Q.VOLTAGE_L1_V: 230.0,
        Q.POWER_W: pytest.approx(7400.0, abs=0.01),
        Q.FREQUENCY_HZ: 50.0,
    }
    assert [b.label for b in plan_blocks(register_map)] == [
        "holding 2699-2702",
        "holding 2999-3110",
    ]


def test_lgplus_golden_holding_floats_low_word_first() -> None:
    """Elmeasure LG+: holding registers from 40101 (address 100), float32 in W, VAR, V, A, Hz
    and Wh (no scaling), the low word first (the map's stated assumption); one frame reads
    the whole window 100-159."""
    register_map = load_map("lgplus")
    raw = dump(
        {
            100: [0x0000, 0x45E6],  # 40101 Watts total 7360.0 W
            102: [0x2000, 0x4519],  # 40103 Watts R phase 2450.0 W
            116: [0x70A4, 0x3F7D],  # 40117 PF average 0.99
            134: [0x8000, 0x43CF],  # 40135 V RY 415.0 V
            142: [0x0000, 0x4366],  # 40143 V R phase 230.0 V
            150: [0x0000, 0x4200],  # 40151 A R phase 32.0 A
            156: [0x0000, 0x4248],  # 40157 Hz 50.0
            158: [0xB438, 0x4996],  # 40159 Wh received 1,234,567 Wh
        },
        100,
        60,
    )
    values = decode_registers(register_map, 100, raw)
    assert values[Q.POWER_W] == 7360.0
    assert values[Q.POWER_L1_W] == 2450.0
    assert values[Q.POWER_FACTOR] == pytest.approx(0.99, abs=1e-6)
    assert values[Q.VOLTAGE_L1_L2_V] == 415.0
    assert values[Q.VOLTAGE_L1_V] == 230.0
    assert values[Q.CURRENT_L1_A] == 32.0
    assert values[Q.FREQUENCY_HZ] == 50.0
    assert values[Q.ENERGY_IMPORT_WH] == 1_234_567.0
    # Read high word first (a meter set the other way), the same words are nonsense: the
    # word order is what the map asserts, not a guess the decoder repairs.
    assert decode_registers(register_map, 100, [0x45E6, 0x0000])[Q.POWER_W] != 7360.0
    assert [(b.label, len(b.registers)) for b in plan_blocks(register_map)] == [
        ("holding 100-159", 21)
    ]


def test_em2m_golden_input_floats_low_word_first_kw_and_kwh() -> None:
    """Selec EM2M-1P-C-100A: input registers 30001-30034 (address = register - 30001), float32
    with the low word first (ESPHome's reading; the manual is silent), kW and kWh scaled to W
    and Wh; one frame reads everything the map holds."""
    register_map = load_map("em2m")
    raw = dump(
        {
            0: [0x5000, 0x449A],  # 30001 Total Active Energy 1234.5 kWh (import + export)
            2: [0x0000, 0x4496],  # 30003 Import Active Energy 1200.0 kWh
            4: [0x0000, 0x420A],  # 30005 Export Active Energy 34.5 kWh
            14: [0x851F, 0x406B],  # 30015 Active Power 3.68 kW
            20: [0x0000, 0x4366],  # 30021 Voltage L-N 230.0 V
            22: [0x0000, 0x4180],  # 30023 Current 16.0 A
            24: [0x70A4, 0x3F7D],  # 30025 Power Factor 0.99
            26: [0xEB85, 0x4247],  # 30027 Frequency 49.98 Hz
        },
        0,
        34,
    )
    values = decode_registers(register_map, 0, raw)
    assert values[Q.ENERGY_TOTAL_WH] == 1_234_500.0
    assert values[Q.ENERGY_IMPORT_WH] == 1_200_000.0
    assert values[Q.ENERGY_EXPORT_WH] == 34_500.0
    assert values[Q.POWER_W] == pytest.approx(3680.0, abs=0.01)  # 3.68 kW in float32
    assert values[Q.VOLTAGE_L1_V] == 230.0
    assert values[Q.CURRENT_L1_A] == 16.0
    assert values[Q.POWER_FACTOR] == pytest.approx(0.99, abs=1e-6)
    assert values[Q.FREQUENCY_HZ] == pytest.approx(49.98, abs=1e-5)
    assert values[Q.REACTIVE_POWER_VAR] == 0.0
    # The same words read high word first are another number: the word order is the map's.
    assert decode_registers(register_map, 20, [0x4366, 0x0000])[Q.VOLTAGE_L1_V] != 230.0
    assert [(b.label, len(b.registers)) for b in plan_blocks(register_map)] == [("input 0-27", 10)]


def test_em4m_golden_input_floats_high_word_first_import_at_88() -> None:
    """Selec EM4M-3P-C-100A: input registers from address 0, float32 high word first (factory
    MSRF), kW and kWh; the import register is Total kWh - Import at 88, not the net kWh at
    58; one frame of 92 registers reads the map."""
    register_map = load_map("em4m")
    raw = dump(
        {
            0: [0x4366, 0x0000],  # V1N 230.0 V
            8: [0x43CF, 0x8000],  # V12 415.0 V
            16: [0x4200, 0x0000],  # I1 32.0 A
            24: [0x40EB, 0x851F],  # kW1 7.36 kW
            42: [0x41B0, 0xA3D7],  # Total kW 22.08 kW
            54: [0x3F7D, 0x70A4],  # Average PF 0.99
            56: [0x4248, 0x0000],  # Frequency 50.0 Hz
            58: [0x449A, 0x5000],  # Total Net kWh (Mains): not in the map
            76: [0x43CD, 0xC000],  # kWh1 - Import 411.5 kWh
            88: [0x449A, 0x5000],  # Total kWh - Import 1234.5 kWh
        },
        0,
        92,
    )
    values = decode_registers(register_map, 0, raw)
    assert values[Q.VOLTAGE_L1_V] == 230.0
    assert values[Q.VOLTAGE_L1_L2_V] == 415.0
    assert values[Q.CURRENT_L1_A] == 32.0
    assert values[Q.POWER_L1_W] == pytest.approx(7360.0, abs=0.01)
    assert values[Q.POWER_W] == pytest.approx(22_080.0, abs=0.01)
    assert values[Q.POWER_FACTOR] == pytest.approx(0.99, abs=1e-6)
    assert values[Q.FREQUENCY_HZ] == 50.0
    assert values[Q.ENERGY_IMPORT_L1_WH] == 411_500.0
    assert values[Q.ENERGY_IMPORT_WH] == 1_234_500.0
    assert values[Q.ENERGY_EXPORT_WH] == 0.0
    assert Q.APPARENT_POWER_VA not in register_map.by_quantity  # kVA/kVAr order unsettled
    assert [(b.label, len(b.registers)) for b in plan_blocks(register_map)] == [("input 0-91", 23)]


def test_a_site_map_file_is_checked_like_the_catalogue() -> None:
    text = load_map_text("sdm120").replace('quantity = "power_w"', 'quantity = "volts"')
    with pytest.raises(RegisterMapError, match="bad or missing field"):
        parse_map_text("site", text)
    with pytest.raises(RegisterMapError, match="not valid TOML"):
        parse_map_text("site", "registers = [")
    assert parse_map_text("site", load_map_text("sdm120")).registers == load_map("sdm120").registers


def test_decoding_a_plan_yields_only_the_planned_quantities() -> None:
    """A plan narrowed to some quantities bridges gaps through others' registers; decoding it
    gives only the chosen ones."""
    register_map = load_map("sdm630")
    chosen = [Q.VOLTAGE_L1_V, Q.ENERGY_IMPORT_WH]
    [block] = plan_blocks(register_map, quantities=chosen)
    image = encode_registers(register_map, dict.fromkeys(register_map.by_quantity, 1.0))
    values = decode_blocks(register_map, [(block, words_at(image, block.start, block.count))])
    assert set(values) == set(chosen)


def test_little_endian_word_order_is_honoured() -> None:
    doc = {
        "name": "test",
        "source": "hand-made",
        "function": "input",
        "word_order": "little",
        "phases": 1,
        "serial": {"baud": 9600, "parity": "N", "stop_bits": 1},
        "registers": [
            {"quantity": "energy_import_wh", "address": 0, "type": "uint32"},
            {"quantity": "power_w", "address": 2, "type": "float32"},
            {"quantity": "power_l1_w", "address": 4, "type": "int16", "scale": 0.1},
            {"quantity": "current_l1_a", "address": 5, "type": "int16", "scale": 0.1},
        ],
    }
    register_map = parse_map("test", doc)
    values = decode_registers(register_map, 0, [0x0001, 0x0002, 0x0000, 0x4366, 0xFFF6, 10])
    assert values == {
        Q.ENERGY_IMPORT_WH: float(0x0002_0001),
        Q.POWER_W: 230.0,
        Q.POWER_L1_W: pytest.approx(-1.0),
        Q.CURRENT_L1_A: pytest.approx(1.0),
    }


def test_encode_then_decode_reproduces_each_map() -> None:
    for model in available_models():
        register_map = load_map(model)
        # Distinct values, each within its quantity's bounds (a power factor stops at 1.05).
        values = {
            r.quantity: min(1.0 + i, QUANTITY_BOUNDS[r.quantity][1])
            for i, r in enumerate(register_map.registers)
        }
        image = encode_registers(register_map, values)
        decoded: dict[Quantity, float] = {}
        for window in register_map.windows:
            count = window.last - window.first + 1
            decoded |= decode_registers(
                register_map, window.first, words_at(image, window.first, count)
            )
        for quantity, expected in values.items():
            reg = register_map.by_quantity[quantity]
            assert decoded[quantity] == pytest.approx(expected, abs=reg.scale), (model, quantity)


def test_a_value_outside_its_physical_bounds_decodes_as_not_available() -> None:
    """A garbage float32 (3.4e38 V) or a negative energy register is left out, like a NaN, so
    the agent never builds a reading the wire contract refuses (issue 13)."""
    doc = {
        "name": "test",
        "source": "hand-made",
        "function": "input",
        "word_order": "big",
        "phases": 1,
        "serial": {"baud": 9600, "parity": "N", "stop_bits": 1},
        "registers": [
            {"quantity": "voltage_l1_v", "address": 0, "type": "float32"},
            {"quantity": "energy_import_wh", "address": 2, "type": "int32"},
            {"quantity": "power_w", "address": 4, "type": "float32"},
            {"quantity": "current_l1_a", "address": 6, "type": "int16", "scale": 0.1},
        ],
    }
    register_map = parse_map("test", doc)
    # 0x7F7FFFFF is float32's largest finite value; 0xFFFFFFFF as int32 is -1 Wh.
    words = [0x7F7F, 0xFFFF, 0xFFFF, 0xFFFF, 0x4366, 0, 0xFFF6]  # current -1.0 A
    values = decode_registers(register_map, 0, words)
    assert values == {Q.POWER_W: 230.0}


def test_decoding_refuses_words_that_are_not_16_bit() -> None:
    with pytest.raises(DecodeError, match="not a 16-bit word") as info:
        decode_registers(load_map("sdm120"), 0, [0x10000, 0])
    assert info.value.address == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["registers"].append(dict(d["registers"][0])), "appears twice"),
        (lambda d: d["registers"][1].update(address=1), "overlaps"),
        (lambda d: d["registers"][0].update(type="float64"), "bad or missing field"),
        (lambda d: d["registers"][0].update(quantity="volts"), "bad or missing field"),
        (lambda d: d["registers"].pop(0), "missing required quantities"),
        (lambda d: d["serial"].update(parity="X"), "parity"),
        (lambda d: d["registers"][0].update(scale=0.0), "scale"),
        (lambda d: d.update(windows=[{"first": 0, "last": 1}]), "not inside one window"),
    ],
)
def test_inconsistent_maps_are_refused_with_the_reason(change: object, message: str) -> None:
    doc = {
        "name": "t",
        "source": "s",
        "function": "holding",
        "phases": 1,
        "serial": {"baud": 9600, "parity": "E", "stop_bits": 1},
        "registers": [
            {"quantity": "energy_import_wh", "address": 0, "type": "uint32"},
            {"quantity": "power_w", "address": 2, "type": "int32"},
            {"quantity": "current_l1_a", "address": 4, "type": "uint16"},
        ],
    }
    assert callable(change)
    change(doc)
    with pytest.raises(RegisterMapError, match=message):
        parse_map("t", doc)


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(RegisterMapError, match="known models: abb_b23"):
        load_map("sdm999")
