"""TensorBoard event files: checksums against the CRC-32C standard vector, events parsed by protobuf itself."""

import struct

import numpy as np
import pytest

from mcjax.train import event_file
from mcjax.train.metrics import MetricWriter


def event_message_class():
    """tensorflow's Event/Summary/Value (the fields mcjax writes) built by protobuf from a descriptor."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="mcjax_test_event.proto", package="mcjax_test")
    value = proto.message_type.add(name="Value")
    value.field.add(name="tag", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    value.field.add(name="simple_value", number=2, type=F.TYPE_FLOAT, label=F.LABEL_OPTIONAL)
    summary = proto.message_type.add(name="Summary")
    summary.field.add(name="value", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                      type_name=".mcjax_test.Value")
    event = proto.message_type.add(name="Event")
    event.field.add(name="wall_time", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    event.field.add(name="step", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    event.field.add(name="file_version", number=3, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    event.field.add(name="summary", number=5, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                    type_name=".mcjax_test.Summary")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("mcjax_test.Event"))


def read_events(path):
    """Every event of a TFRecord file, both checksums of each record verified."""
    Event, events = event_message_class(), []
    data = open(path, "rb").read()
    offset = 0
    while offset < len(data):
        header = data[offset:offset + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[offset + 8:offset + 12])
        payload = data[offset + 12:offset + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])
        assert length_crc == event_file.masked_crc32c(header) and payload_crc == event_file.masked_crc32c(payload)
        events.append(Event.FromString(payload))
        offset += 16 + length
    assert offset == len(data)
    return events


def test_crc32c_standard_check_value():
    assert event_file.crc32c(b"123456789") == 0xE3069283  # CRC-32/ISCSI's check value (the CRC catalogue's)
    assert event_file.crc32c(b"") == 0


def test_scalar_events_parse(tmp_path):
    writer = event_file.EventFileWriter(str(tmp_path))
    writer.add_scalars(3, {"loss": 0.25, "kl_dim_0": np.float32(1.5)})
    writer.add_scalars(2**40, {"stage_1/loss": -7.0})
    writer.close()
    version, first, second = read_events(writer.path)
    assert version.file_version == "brain.Event:2" and version.wall_time > 1e9
    assert first.step == 3 and [(v.tag, v.simple_value) for v in first.summary.value] == [("loss", 0.25),
                                                                                          ("kl_dim_0", 1.5)]
    assert second.step == 2**40 and second.summary.value[0].tag == "stage_1/loss"
    assert second.summary.value[0].simple_value == -7.0


def test_writers_never_overwrite(tmp_path):
    first, second = event_file.EventFileWriter(str(tmp_path)), event_file.EventFileWriter(str(tmp_path))
    first.add_scalars(1, {"a": 1.0})
    first.close(), second.close()
    assert first.path != second.path and len(read_events(first.path)) == 2 and len(read_events(second.path)) == 1


@pytest.mark.parametrize("tensorboard", [True, False])
def test_metric_writer(tmp_path, tensorboard):
    writer = MetricWriter(str(tmp_path), tensorboard=tensorboard)
    writer.write(10, {"loss": 1.0}, run=0)
    writer.summarise(10, {"loss": 1.0})
    writer.close()
    files = list((tmp_path / "tensorboard").glob("events.out.tfevents.*")) if tensorboard else []
    assert (tmp_path / "tensorboard").exists() == tensorboard
    if tensorboard:
        (only,) = files
        assert [v.tag for v in read_events(only)[1].summary.value] == ["loss"]
