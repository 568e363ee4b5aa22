"""Episode bags with ``rosbags``: rosbag2 directories (metadata version 9) with MCAP storage, raw CDR as received.

:class:`EpisodeWriter` writes one episode into ``OUT/incomplete/<name>/`` and, when it is kept, closes the bag,
flushes it to disk and moves the directory to ``OUT/<name>/`` in one rename. Messages are written exactly as
they came off the wire (the bytes a ``raw=True`` subscription hands over); nothing is deserialised or
re-encoded on the way. The writer flushes its pending MCAP chunk every ``flush_period`` seconds, so the file
of a killed recorder holds everything up to about then.

:func:`repair` salvages such a file: it reads the MCAP records up to where the file ends (schemas, channels,
chunks of messages; a torn last record is dropped) and writes them into a proper bag with status ``salvaged``.
"""

from __future__ import annotations

import shutil
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dream_vla_ros.record.episode import (
    CUSTOM_DATA_KEY,
    INCOMPLETE_DIR,
    STATUS_COMPLETE,
    STATUS_RECORDING,
    STATUS_SALVAGED,
    RecorderError,
    fsync_path,
    read_info,
    write_info,
)

_STORES = {"humble": "ROS2_HUMBLE", "iron": "ROS2_IRON", "jazzy": "ROS2_JAZZY", "kilted": "ROS2_KILTED"}
_HEADER_TYPE = "std_msgs/msg/Header"


def typestore_for(distro: str | None = None):
    """The ``rosbags`` type store of a ROS 2 distribution (the newest known one for others or None)."""
    from rosbags.typesys import Stores, get_typestore

    name = _STORES.get((distro or "").lower(), "LATEST")
    return get_typestore(getattr(Stores, name))


def message_definition(typestore, msgtype: str) -> tuple[str, str]:
    """(ros2msg definition text, RIHS01 type hash) of ``msgtype``; RecorderError when the store lacks it."""
    if msgtype not in typestore.fielddefs:
        raise RecorderError(f"no message definition for {msgtype} in the rosbags type store")
    msgdef, _ = typestore.generate_msgdef(msgtype, ros_version=2)
    return msgdef, typestore.hash_rihs01(msgtype)


def starts_with_header(typestore, msgtype: str) -> bool:
    """Whether the first field of ``msgtype`` is a ``std_msgs/Header`` (its stamp is then at CDR offset 4)."""
    fields = typestore.fielddefs.get(msgtype, (None, []))[1]
    return bool(fields) and fields[0][0] == "header" and fields[0][1][1] == _HEADER_TYPE


_STAMP_LE = struct.Struct("<iI")
_STAMP_BE = struct.Struct(">iI")


def header_stamp_ns(raw: bytes | memoryview) -> int:
    """``header.stamp`` in ns of a raw CDR message whose first field is a Header (0 if the data is too short)."""
    if len(raw) < 12:
        return 0
    sec, nanosec = (_STAMP_LE if raw[1] == 1 else _STAMP_BE).unpack_from(raw, 4)
    return sec * 1_000_000_000 + nanosec


@dataclass
class TopicInfo:
    """What the bag needs to declare a topic."""

    topic: str
    msgtype: str
    msgdef: str
    type_hash: str


class EpisodeWriter:
    """One episode's rosbag2 directory, from ``incomplete/`` to its final place.

    ``info`` is the ``episode.json`` record; it is written at once (status ``recording``) and again, with the
    final status, when the episode is closed.
    """

    def __init__(self, root: Path, name: str, topics: list[TopicInfo], info: dict[str, Any],
                 compression: str = "none") -> None:
        from rosbags.rosbag2 import Writer
        from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin

        self.root = Path(root)
        self.name = name
        self.incomplete = self.root / INCOMPLETE_DIR / name
        self.final = self.root / name
        if self.final.exists() or self.incomplete.exists():
            raise RecorderError(f"{name}: an episode directory with this name exists already")
        self.incomplete.parent.mkdir(parents=True, exist_ok=True)
        self.writer = Writer(self.incomplete, version=9, storage_plugin=StoragePlugin.MCAP)
        if compression == "zstd":
            self.writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self.writer.open()
        self.info = dict(info)
        self._connections: dict[str, Any] = {}
        for topic in topics:
            self.add_topic(topic)
        write_info(self.incomplete, {**self.info, "status": STATUS_RECORDING, "complete": False})
        fsync_path(self.incomplete.parent)

    def add_topic(self, topic: TopicInfo) -> None:
        if topic.topic in self._connections:
            return
        self._connections[topic.topic] = self.writer.add_connection(
            topic.topic, topic.msgtype, msgdef=topic.msgdef, rihs01=topic.type_hash)

    def has_topic(self, topic: str) -> bool:
        return topic in self._connections

    def write(self, topic: str, timestamp_ns: int, raw: bytes | memoryview) -> None:
        """Append one message (raw CDR) at ``timestamp_ns`` (the receive time)."""
        self.writer.write(self._connections[topic], timestamp_ns, raw)

    def flush(self) -> None:
        """Write the pending MCAP chunk into the file and hand it to the OS (a kill loses nothing before it)."""
        storage = self.writer.storage
        if storage is None:
            return
        chunk = getattr(storage, "chunk", None)
        if chunk is not None and chunk.bio.tell():
            storage.close_chunk()
        storage.bio.flush()

    @property
    def mcap_path(self) -> Path:
        return self.incomplete / f"{self.name}.mcap"

    def close(self, info: dict[str, Any]) -> Path:
        """Close the bag with ``info`` (its final record), flush it to disk, move it to ``OUT/<name>``."""
        import json

        self.info = dict(info)
        text = json.dumps(self.info)
        self.writer.set_custom_data(CUSTOM_DATA_KEY, text)
        self.writer.set_custom_data("instruction", str(self.info.get("instruction", "")))
        self.writer.set_custom_data("task", str(self.info.get("task", "")))
        self.writer.close()
        write_info(self.incomplete, self.info)
        for path in (self.mcap_path, self.incomplete / "metadata.yaml", self.incomplete):
            fsync_path(path)
        self.incomplete.rename(self.final)
        fsync_path(self.root)
        fsync_path(self.incomplete.parent)
        return self.final

    def discard(self) -> None:
        """Drop the episode: close the file without an index and delete its directory."""
        self.writer.abort()
        shutil.rmtree(self.incomplete, ignore_errors=True)

    def abandon(self) -> None:
        """Close the file without finishing it (after a write error); the directory stays in ``incomplete/``."""
        self.writer.abort()


# -- salvaging the MCAP file of a killed recorder ------------------------------------------------------------
_MAGIC = b"\x89MCAP0\r\n"
_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK = 0x03, 0x04, 0x05, 0x06


@dataclass
class McapScan:
    """What could be read from a (possibly truncated) MCAP file."""

    schemas: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # id -> (name, encoding, data)
    channels: dict[int, tuple[int, str, str]] = field(default_factory=dict)  # id -> (schema id, topic, encoding)
    messages: int = 0
    truncated: bool = False
    first_ns: int | None = None
    last_ns: int | None = None


def _string(view: memoryview, pos: int) -> tuple[str, int]:
    (size,) = struct.unpack_from("<I", view, pos)
    pos += 4
    if pos + size > len(view):
        raise ValueError("string past the end of its record")
    return bytes(view[pos:pos + size]).decode(), pos + size


def _records(view: memoryview, scan: McapScan) -> Iterator[tuple[int, memoryview]]:
    """(opcode, body) of each complete record of ``view``; sets ``scan.truncated`` on a torn one."""
    pos = 0
    while pos < len(view):
        if pos + 9 > len(view):
            scan.truncated = True
            return
        opcode = view[pos]
        (size,) = struct.unpack_from("<Q", view, pos + 1)
        start = pos + 9
        if start + size > len(view):
            scan.truncated = True
            return
        yield opcode, view[start:start + size]
        pos = start + size


def scan_mcap(path: Path, scan: McapScan) -> Iterator[tuple[int, int, memoryview]]:
    """(channel id, log time ns, data) of every readable message of an MCAP file, in file order; schemas and
    channels are collected into ``scan`` as they appear (always before the messages that use them)."""
    data = path.read_bytes()
    if not data.startswith(_MAGIC):
        raise RecorderError(f"{path}: not an MCAP file")
    view = memoryview(data)[len(_MAGIC):]
    yield from _scan_records(view, scan, nested=False)


def _scan_records(view: memoryview, scan: McapScan, nested: bool) -> Iterator[tuple[int, int, memoryview]]:
    for opcode, body in _records(view, scan):
        try:
            if opcode == _OP_SCHEMA:
                (schema_id,) = struct.unpack_from("<H", body, 0)
                name, pos = _string(body, 2)
                encoding, pos = _string(body, pos)
                (size,) = struct.unpack_from("<I", body, pos)
                scan.schemas[schema_id] = (name, encoding, bytes(body[pos + 4:pos + 4 + size]).decode())
            elif opcode == _OP_CHANNEL:
                channel_id, schema_id = struct.unpack_from("<HH", body, 0)
                topic, pos = _string(body, 4)
                encoding, pos = _string(body, pos)
                scan.channels[channel_id] = (schema_id, topic, encoding)
            elif opcode == _OP_MESSAGE:
                channel_id, _sequence, log_time, _publish_time = struct.unpack_from("<HIQQ", body, 0)
                scan.messages += 1
                scan.first_ns = log_time if scan.first_ns is None else min(scan.first_ns, log_time)
                scan.last_ns = log_time if scan.last_ns is None else max(scan.last_ns, log_time)
                yield channel_id, log_time, body[22:]
            elif opcode == _OP_CHUNK and not nested:
                _start, _end, uncompressed_size, crc = struct.unpack_from("<QQQI", body, 0)
                compression, pos = _string(body, 28)
                (size,) = struct.unpack_from("<Q", body, pos)
                records = body[pos + 8:pos + 8 + size]
                if compression == "zstd":
                    records = memoryview(_zstd_decompress(bytes(records)))
                elif compression:
                    raise ValueError(f"unsupported chunk compression {compression!r}")
                if crc and zlib.crc32(records) != crc:
                    raise ValueError("chunk checksum mismatch")
                if len(records) != uncompressed_size:
                    raise ValueError("chunk size mismatch")
                yield from _scan_records(records, scan, nested=True)
        except (struct.error, ValueError, UnicodeDecodeError):
            scan.truncated = True
            return


def _zstd_decompress(data: bytes) -> bytes:
    try:
        from compression import zstd  # Python >= 3.14
    except ImportError:
        from backports import zstd
    return zstd.decompress(data)


@dataclass(frozen=True)
class RepairResult:
    source: Path
    path: Path | None
    messages: int
    truncated: bool
    action: str  # moved (the bag was closed already), salvaged, empty (nothing readable: removed)


def repair(incomplete_dir: str | Path, typestore=None) -> RepairResult:
    """Turn ``OUT/incomplete/<name>`` into a readable ``OUT/<name>``.

    A bag that was closed (metadata.yaml present: the recorder died between closing and moving it) is moved
    as it is. Otherwise the messages readable from its MCAP file are written into a new bag whose
    ``episode.json`` says ``salvaged`` (``complete`` false) with the time span recovered. A file with no
    readable message is removed. The incomplete directory is deleted once the result is in place.
    """
    from rosbags.rosbag2 import Writer
    from rosbags.rosbag2.enums import StoragePlugin

    source = Path(incomplete_dir)
    root = source.parent.parent
    final = root / source.name
    if final.exists():
        raise RecorderError(f"{final} exists already; move it away before repairing {source}")
    info = read_info(source) or {}
    if (source / "metadata.yaml").is_file():
        if info.get("status") == STATUS_RECORDING:
            info["status"] = STATUS_COMPLETE
            info["complete"] = True
            write_info(source, info)
        source.rename(final)
        fsync_path(root)
        return RepairResult(source, final, -1, False, "moved")
    mcaps = sorted(source.glob("*.mcap"))
    if not mcaps:
        shutil.rmtree(source)
        return RepairResult(source, None, 0, True, "empty")
    typestore = typestore if typestore is not None else typestore_for(None)
    staging = source.parent / f".{source.name}.salvaging"
    shutil.rmtree(staging, ignore_errors=True)
    scan = McapScan()
    known_hashes = {t: d.get("type_hash", "") for t, d in (info.get("topics") or {}).items()}
    writer = Writer(staging, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    connections: dict[int, Any] = {}
    try:
        for channel_id, log_time, payload in scan_mcap(mcaps[0], scan):
            connection = connections.get(channel_id)
            if connection is None:
                schema_id, topic, _encoding = scan.channels[channel_id]
                msgtype, _schema_encoding, msgdef = scan.schemas[schema_id]
                type_hash = known_hashes.get(topic) or (
                    typestore.hash_rihs01(msgtype) if msgtype in typestore.fielddefs else "")
                if not type_hash:
                    continue  # a type neither the record nor the store knows: cannot declare it
                connection = connections[channel_id] = writer.add_connection(topic, msgtype, msgdef=msgdef,
                                                                             rihs01=type_hash)
            writer.write(connection, log_time, payload)
    except BaseException:
        writer.abort()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if scan.messages == 0:
        writer.abort()
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(source)
        return RepairResult(source, None, 0, scan.truncated, "empty")
    import json

    first, last = scan.first_ns or 0, scan.last_ns or 0
    info.update(status=STATUS_SALVAGED, complete=False, stop_ns=last,
                duration_s=(last - int(info.get("start_ns", first))) / 1e9 if last else 0.0,
                salvaged={"messages": scan.messages, "truncated": scan.truncated, "from": mcaps[0].name})
    writer.set_custom_data(CUSTOM_DATA_KEY, json.dumps(info))
    writer.set_custom_data("instruction", str(info.get("instruction", "")))
    writer.set_custom_data("task", str(info.get("task", "")))
    writer.close()
    write_info(staging, info)
    for path in [*staging.iterdir(), staging]:
        fsync_path(path)
    # The bag directory is named after the episode, but rosbags named its file after the staging directory.
    bag_file = next(staging.glob("*.mcap"))
    wanted = staging / f"{source.name}.mcap"
    bag_file.rename(wanted)
    _rename_in_metadata(staging / "metadata.yaml", bag_file.name, wanted.name)
    staging.rename(final)
    fsync_path(root)
    shutil.rmtree(source)
    return RepairResult(source, final, scan.messages, scan.truncated, "salvaged")


def _rename_in_metadata(metadata: Path, old: str, new: str) -> None:
    import yaml

    document = yaml.safe_load(metadata.read_text())
    information = document["rosbag2_bagfile_information"]
    information["relative_file_paths"] = [new if p == old else p for p in information["relative_file_paths"]]
    for entry in information.get("files", []):
        if entry.get("path") == old:
            entry["path"] = new
    partial = metadata.with_suffix(".yaml.partial")
    partial.write_text(yaml.safe_dump(document, sort_keys=False))
    partial.replace(metadata)


def read_bag_messages(path: str | Path, topics: list[str] | None = None) -> Iterator[tuple[str, int, bytes]]:
    """(topic, receive time ns, raw CDR) of a closed bag, in time order (only ``topics`` when given)."""
    from rosbags.rosbag2 import Reader

    with Reader(Path(path)) as reader:
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        if not connections:
            return
        for connection, timestamp, raw in reader.messages(connections=connections):
            yield connection.topic, timestamp, raw


def decode_string(raw: bytes | memoryview) -> str:
    """The text of a raw ``std_msgs/String`` (tolerating trailing padding)."""
    view = memoryview(raw)
    if len(view) < 8:
        return ""
    little = view[1] == 1
    (size,) = struct.unpack_from("<I" if little else ">I", view, 4)
    return bytes(view[8:8 + max(0, size - 1)]).decode("utf-8", errors="replace")


def encode_string(typestore, text: str) -> bytes:
    """A raw little-endian ``std_msgs/String``."""
    return bytes(typestore.serialize_cdr(typestore.types["std_msgs/msg/String"](data=text), "std_msgs/msg/String"))


__all__ = [
    "EpisodeWriter",
    "McapScan",
    "RepairResult",
    "TopicInfo",
    "decode_string",
    "encode_string",
    "header_stamp_ns",
    "message_definition",
    "read_bag_messages",
    "repair",
    "scan_mcap",
    "starts_with_header",
    "typestore_for",
]
