"""Typed errors of the serial protocol cores.

Blame is in the type (CONVENTIONS 4): every class below except :class:`SerialUsageError` means
"the device or the line sent something we cannot accept" and derives from
:class:`gateway.errors.ProtocolError`; the cores never raise anything else for bad input bytes.
:class:`SerialUsageError` means the driver called a core wrongly (a bug on our side).
"""

from __future__ import annotations

from gateway.errors import DecodeError, GatewayError, ProtocolError


class AstmLinkError(ProtocolError):
    """An ASTM E1381 frame or link-control sequence was defective (checksum, number, layout)."""

    hint = "check cable, baud rate and parity; the analyser resends frames we refuse"


class AstmRecordError(DecodeError):
    """An ASTM E1394 message or record does not follow the standard (or our mapping table)."""

    hint = (
        "capture the message with 'gatewayctl decode --protocol astm' and report the analyser"
        " model; unknown test codes go into the analyser test table of the configuration"
    )


class NoninFrameError(DecodeError):
    """Bytes from a Nonin oximeter that do not form a valid data-format-2 frame or packet."""

    hint = "check that the oximeter is set to serial data format 2 (9600 8N1)"


class Cms50FrameError(DecodeError):
    """Bytes from a Contec CMS50D+ that do not form a valid live-data packet."""

    hint = "check the port settings (19200 baud, 8 data bits, odd parity, 1 stop bit)"


class AtResponseError(ProtocolError):
    """A modem response line that does not follow 3GPP TS 27.007."""

    hint = "capture the modem transcript and report the modem model and firmware"


class SerialUsageError(GatewayError):
    """A protocol core was called in a way its state does not allow. Blame: the driver (us)."""

    hint = "this is a bug in the gateway; report it with the log lines around it"
