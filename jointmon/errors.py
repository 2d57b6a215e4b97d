"""Typed errors shared by every component: decode, config and connection failures."""


class JointmonError(Exception):
    """Base class of every error jointmon raises on purpose."""


class PacketError(JointmonError):
    """A BLE notification packet that cannot be decoded.

    ``reason`` is a short stable token (``"truncated"``, ``"bad_crc"``, ...) used as the
    counter key, so drops are counted per reason.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class FrameError(JointmonError):
    """An MQTT data frame payload that cannot be decoded (same ``reason`` convention)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class TopicError(JointmonError):
    """An MQTT topic that does not match the documented topic tree."""


class MessageError(JointmonError):
    """A JSON message (event, status) that does not match its schema."""


class ConfigError(JointmonError):
    """A configuration problem; the message names the file and the key."""


class LinkError(JointmonError):
    """A sensor link (BLE or simulated) failed to connect or dropped."""


class SessionFolderError(JointmonError):
    """A session folder (``docs/session-folder.md``) that cannot be imported; the message starts
    with the offending file's path and names the row, column or key where there is one."""


class RecordingError(JointmonError):
    """A session recording (``docs/recording-format.md``) that cannot be read or written; the
    message starts with the file's path."""
