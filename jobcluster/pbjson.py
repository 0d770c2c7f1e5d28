"""gRPC messages as plain JSON objects, for the client's ``--json`` and the web UI's JSON API.

protobuf's own JSON mapping writes 64-bit integers as strings (``"created_at_ms": "1764680000000"``), which
scripts then have to convert back. Every integer here is a JSON number (a millisecond timestamp is far
below 2^53, so JavaScript reads it exactly). Field names are the proto's (``created_at_ms``), and fields
left at their default are written too, so a script always finds every key.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def to_dict(message: Message) -> dict[str, Any]:
    """``message`` as a JSON object: proto field names, defaults included, integers as numbers."""
    raw = MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return _numbers(raw, message.DESCRIPTOR)


def _numbers(obj: dict[str, Any], descriptor: Any) -> dict[str, Any]:  # a (upb or python) Descriptor
    for field in descriptor.fields:
        if field.name not in obj:
            continue
        value = obj[field.name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            if value_field.type in _INT64:
                obj[field.name] = {k: int(v) for k, v in value.items()}
            elif value_field.message_type is not None:
                obj[field.name] = {k: _numbers(v, value_field.message_type) for k, v in value.items()}
        elif field.message_type is not None:
            sub = field.message_type
            obj[field.name] = [_numbers(v, sub) for v in value] if isinstance(value, list) else _numbers(value, sub)
        elif field.type in _INT64:
            obj[field.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
    return obj
