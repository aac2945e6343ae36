"""Energy meters as data: register maps, decoding, encoding and block planning.

The maps themselves are TOML files beside this module (one per model, each naming its
source); :func:`~protocols.meters.registermap.load_map` reads and validates them.
"""

from protocols.meters.codec import decode_blocks, decode_registers, encode_registers
from protocols.meters.planner import MAX_REGISTERS_PER_READ, Block, plan_blocks
from protocols.meters.quantities import QUANTITY_BOUNDS, Quantity, in_bounds
from protocols.meters.registermap import (
    DataType,
    Register,
    RegisterMap,
    WordOrder,
    available_models,
    load_map,
    parse_map_text,
)

__all__ = [
    "MAX_REGISTERS_PER_READ",
    "QUANTITY_BOUNDS",
    "Block",
    "DataType",
    "Quantity",
    "Register",
    "RegisterMap",
    "WordOrder",
    "available_models",
    "decode_blocks",
    "decode_registers",
    "encode_registers",
    "in_bounds",
    "load_map",
    "parse_map_text",
    "plan_blocks",
]
