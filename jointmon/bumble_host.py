"""Bumble's HCI host without the per-packet debug formatting, for both ends of a jointmon Bluetooth link.

Bumble's ``Host`` builds a colourised f-string of every HCI packet for a ``logger.debug`` call, whether
debug logging is on or not; at a gateway's ~700 notifications/s that formatting was about 40 % of the
stack's CPU time (profiled). :class:`QuietHost` skips it unless the ``bumble.host`` logger is at DEBUG,
and otherwise does what ``Host`` does (snoop, send / dispatch).
"""

from __future__ import annotations

import logging

from bumble import hci
from bumble.host import Host
from bumble.snoop import Snooper

_bumble_log = logging.getLogger("bumble.host")


class QuietHost(Host):
    """``bumble.host.Host`` that formats packets only for an enabled debug log."""

    def send_hci_packet(self, packet: hci.HCI_Packet) -> None:
        if _bumble_log.isEnabledFor(logging.DEBUG):
            super().send_hci_packet(packet)
            return
        data = bytes(packet)
        if self.snooper:
            self.snooper.snoop(data, Snooper.Direction.HOST_TO_CONTROLLER)
        if self.hci_sink:
            self.hci_sink.on_packet(data)

    def on_hci_packet(self, packet: hci.HCI_Packet) -> None:
        if _bumble_log.isEnabledFor(logging.DEBUG):
            super().on_hci_packet(packet)
            return
        if self.snooper:
            self.snooper.snoop(bytes(packet), Snooper.Direction.CONTROLLER_TO_HOST)
        match packet:
            case hci.HCI_Event():
                self.on_hci_event_packet(packet)
            case hci.HCI_AclDataPacket():
                self.on_hci_acl_data_packet(packet)
            case _:  # commands, SCO, ISO: rare here; Host handles (and logs) them
                super().on_hci_packet(packet)
