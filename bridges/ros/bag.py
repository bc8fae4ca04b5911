"""Recording an episode's ROS 2 traffic as a rosbag2 (mcap storage) with `rosbags` (no ROS install needed).

The agent node hands over each message it receives or publishes; it is CDR-serialized by rclpy (the
wire format `ros2 bag record` stores), without the slack bytes at the end of rclpy's buffer. The bag
is written into `.<name>.partial/` and renamed to `<name>/` when the episode ends, so a crash never
leaves a half-written bag under its final name. Read one back with `read_bag(path)`, or with
`ros2 bag info` / `ros2 bag play` on a ROS 2 machine.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from rclpy.serialization import serialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

TYPESTORE = Stores.ROS2_KILTED


def msgtype_of(msg_or_class) -> str:
    """'sensor_msgs/msg/Image' for a rclpy message (or its class)."""
    cls = msg_or_class if isinstance(msg_or_class, type) else type(msg_or_class)
    return f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"


class BagRecorder:
    """One bag: `write(topic, msg, t_ns)` from any thread, then `close()` (publishes it) or `abort()`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.partial = self.path.parent / f".{self.path.name}.partial"
        if self.path.exists():
            raise FileExistsError(f"bag {self.path} already exists")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.partial, ignore_errors=True)
        self._typestore = get_typestore(TYPESTORE)
        self._writer = Writer(self.partial, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections: dict[tuple[str, str], object] = {}
        self._lock = threading.Lock()
        self.count = 0

    def write(self, topic: str, msg, t_ns: int, raw: bytes | None = None) -> None:
        kind = msgtype_of(msg)
        data = self._exact(kind, raw if raw is not None else serialize_message(msg))
        with self._lock:
            if self._writer is None:
                return
            conn = self._connections.get((topic, kind))
            if conn is None:
                conn = self._connections[(topic, kind)] = self._writer.add_connection(
                    topic, kind, typestore=self._typestore)
            self._writer.write(conn, t_ns, data)
            self.count += 1

    def _exact(self, kind: str, data: bytes) -> bytes:
        """The CDR bytes without the trailing slack rclpy's buffer may carry (readers reject it)."""
        msgdef = self._typestore.get_msgdef(kind)
        decode = msgdef.deserialize_cdr_le if data[1] else msgdef.deserialize_cdr_be
        _, end = decode(memoryview(data)[4:], 0, msgdef.cls, self._typestore)
        return bytes(data[: end + 4])

    def close(self) -> Path:
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()


def read_bag(path: str | os.PathLike) -> list[tuple[str, str, int, object]]:
    """All messages of a bag as (topic, msgtype, timestamp ns, deserialized message), in time order."""
    typestore = get_typestore(TYPESTORE)
    out = []
    with Reader(Path(path)) as reader:
        for conn, t_ns, raw in reader.messages():
            out.append((conn.topic, conn.msgtype, t_ns, typestore.deserialize_cdr(raw, conn.msgtype)))
    return out
