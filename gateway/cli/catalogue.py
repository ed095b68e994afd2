"""The words ``gatewayctl status`` uses for each finding: what is wrong and what to do next.

Written for a technician on a support call, not for the engineer who wrote the daemon. Every
alarm code of gateway/alarms.py has an entry (``alarm=True``); so has every condition the
diagnosis finds in the snapshot by itself. ``{names}`` are filled from the snapshot (states,
ages, error texts, device ids) - never a clinical value, which the snapshot does not hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway import alarms


@dataclass(frozen=True, slots=True)
class Entry:
    code: str
    severity: str  # "problem" (gatewayctl status exits 1) or "warning"
    subject: str  # the default subject; device, modem and loop findings name their own
    what: str
    action: str
    alarm: bool = False  # True: a code the daemon raises in its health report's alarms


UNKNOWN_ALARM = "unknown-alarm"
_SUPPORT = "send a support bundle (gatewayctl support-bundle) to the provider's support"
_RESTART = "sudo systemctl restart gatewayd"

_ENTRIES = (
    # -- raised by the daemon (gateway/alarms.py) ----------------------------------------------
    Entry(alarms.OUTBOX_REPLACED, "problem", "outbox",
          "The gateway's store of readings (the outbox) was damaged and replaced by a new, empty "
          "one at start-up; the damaged file was kept and the provider was told.",
          f"Restart the gateway once to clear this message ({_RESTART}) and {_SUPPORT}. If it "
          "happens again, the router's storage is failing: replace the router.", alarm=True),
    Entry(alarms.COMMAND_LEDGER_UNUSABLE, "problem", "commands",
          "The gateway cannot open its record of the command centre's commands, so it takes no "
          "commands from the command centre; readings are not affected.",
          f"Restart the gateway ({_RESTART}); if this stays, {_SUPPORT}.", alarm=True),
    Entry(alarms.OUTBOX_COMMIT_FAILING, "problem", "outbox",
          "The gateway cannot save readings to its storage (last error: {error}). Readings stay "
          "on the devices that keep them; live values are lost meanwhile.",
          "Run gatewayctl selftest; free disk space or replace the router if the storage is "
          "failing.", alarm=True),
    Entry(alarms.OUTBOX_QUOTA_REACHED, "problem", "outbox",
          "The gateway's store of readings is full (quota {quota} bytes): new readings are "
          "refused ({refused} so far, each one reported to the provider) because nothing is "
          "being delivered.",
          "Fix the connection to the provider first (see the uplink finding); the space comes "
          "back by itself as stored records are delivered.", alarm=True),
    Entry(alarms.STREAM_CHUNK_LOST, "problem", "outbox",
          "A piece of continuous monitoring data (a few seconds of a stream) was lost when the "
          "gateway stopped uncleanly (power cut or crash); the provider was told of the gap.",
          "Check that the router's power supply is secure and not switched off by the patient; "
          f"if it keeps happening, {_SUPPORT}.", alarm=True),
    Entry(alarms.UPLINK_REFUSED, "problem", "uplink",
          "The provider's server answers but refuses this gateway or its data "
          "(last error: {error}).",
          "Call the provider: this gateway's access rights (identity, ACL or quota) on their "
          "server must be fixed. Readings are kept meanwhile.", alarm=True),
    Entry(alarms.VPN_DOWN, "problem", "uplink",
          "The VPN tunnel to the provider is down: the route to the provider's server does not "
          "go through it, so the gateway sends nothing (last error: {error}).",
          "Check the VPN service (sudo systemctl status wg-quick@wg0) and restart it; check the "
          "internet link under it (5G modem signal and SIM).", alarm=True),
    Entry(alarms.VPN_HANDSHAKE_STALE, "problem", "vpn",
          "The VPN tunnel ({interface}) has not heard from the provider's VPN server "
          "(last handshake {age}): it carries no traffic.",
          "Check the internet link under the tunnel (5G modem signal and SIM, cables); if that "
          "is fine, ask the provider whether their VPN server is up.", alarm=True),
    Entry(alarms.WAN_UNEXPECTED_INTERFACE, "problem", "wan-route",
          "The traffic to the provider goes over {interface}, which is neither the 5G modem nor "
          "an allowed broadband connection.",
          "Check that the 5G modem is connected and online; unplug the other network (e.g. the "
          "home's own router) or ask the provider to allow it as an exception.", alarm=True),
    Entry(alarms.CERTIFICATE_EXPIRES_SOON, "problem", "certificate",
          "The router's certificate expires in {days} days ({not_after}) and has not been "
          "renewed automatically.",
          "Check that the router can reach the provider (uplink) so it can renew; otherwise ask "
          "the provider to re-issue the certificate (re-enrol the router).", alarm=True),
    Entry(alarms.POWER_ON_BATTERY, "problem", "power",
          "The patient's home has no mains power since {since}: the router runs on its battery "
          "({charge} charged, about {runtime} left). Readings are still taken and sent.",
          "Call the patient or carer: is there a power cut in the home, or was the router's "
          "power supply unplugged? The gateway stops cleanly before the battery is empty and "
          "starts again when power returns.", alarm=True),
    Entry(alarms.POWER_BATTERY_LOW, "problem", "power",
          "The router's battery is nearly empty ({runtime} left, {charge} charged): the gateway "
          "is stopping cleanly and powers the router off; it starts again when power returns.",
          "Call the patient: if the power cut goes on, arrange another way to take "
          "measurements. Stored readings arrive after the restart.", alarm=True),
    Entry(alarms.POWER_FLAPPING, "problem", "power",
          "The mains power keeps dropping out and coming back; the gateway reports it as one "
          "flapping period, not every drop.",
          "Ask the patient or carer whether the router's power supply is in a loose socket or a "
          "switched power strip; if the home's supply itself is unstable, tell the provider.",
          alarm=True),
    Entry(alarms.UPS_UNREACHABLE, "problem", "power",
          "The gateway cannot read the UPS ({ups}: {error}), so it cannot see a power cut nor "
          "stop cleanly before the battery runs out.",
          "Check the UPS's USB cable to the router and that NUT runs (sudo systemctl status "
          "nut-server; upsc {ups}).", alarm=True),
    Entry(alarms.UPS_SELF_TEST_FAILED, "problem", "power",
          "The UPS's own battery test did not pass ({result}): the battery may not carry the "
          "router through a power cut.",
          "Replace the UPS or its battery at the next visit; tell the provider's logistics.",
          alarm=True),
    Entry(alarms.DEVICE_SILENT, "problem", "device",
          "The device has sent nothing for longer than expected (last seen: {last_seen}; "
          "state {state}).",
          "Check that the device is switched on, charged and near the router, and ask whether "
          "the patient used it; replace it if it does not respond.", alarm=True),
    Entry(alarms.LOOP_STALLED, "problem", "gateway",
          "Part of the gateway ({loop}) has made no progress for {age}; the system watchdog "
          "restarts the gateway if it stays stuck.",
          f"If this is still shown in a few minutes, restart the gateway ({_RESTART}) and "
          f"{_SUPPORT}.", alarm=True),
    Entry(alarms.DRIVER_RESTARTING, "problem", "device",
          "The gateway's reader for this device failed ({error_type}) and is restarted by "
          "itself ({failures} failures so far); the other devices are not affected. What the "
          "device had not been told was stored, it sends again.",
          "If this stays for more than a few minutes, switch the device off and on and "
          f"{_SUPPORT}.", alarm=True),
    Entry(alarms.DEVICE_INPUT_REJECTED, "warning", "device",
          "The device sent data the gateway could not accept ({rejected} times; e.g. damaged "
          "or oversized messages): those parts were refused, the rest is read normally.",
          "Check the device's cable and settings (baud rate, data format); if it repeats, "
          "replace the device or its cable and tell the provider which device it was.",
          alarm=True),
    # -- the uplink, from its state and last error ---------------------------------------------
    Entry("uplink-not-connected", "problem", "uplink",
          "The gateway is not connected to the provider (state {state}; last error: {error}). "
          "Readings are kept and sent once it connects.",
          "Wait a minute; if it stays, run gatewayctl uplink-test to see which step fails."),
    Entry("uplink-broker-unreachable", "problem", "uplink",
          "The provider's server cannot be reached (last error: {error}). Readings are kept and "
          "sent once it is back.",
          "Check the internet link (5G modem signal and SIM, cables, VPN). If the router is "
          "online, the provider's server is down: call the provider."),
    Entry("uplink-certificate-revoked", "problem", "uplink",
          "The provider's server refuses this router because its certificate was revoked "
          "(last error: {error}).",
          "Ask the provider why it was revoked (returned or replaced router?); the router must "
          "be re-enrolled with a new enrolment token (gatewayctl enrol)."),
    Entry("uplink-certificate-rejected", "problem", "uplink",
          "The provider's server rejects this router's certificate (last error: {error}).",
          "Ask the provider to check this router's certificate and re-issue it (re-enrol the "
          "router with a new token: gatewayctl enrol)."),
    Entry("uplink-broker-untrusted", "problem", "uplink",
          "The gateway does not trust the provider's server certificate (last error: {error}), "
          "so it does not send anything to it.",
          "Check the router's date and time (see clock); if they are right, call the provider: "
          "their server certificate or this router's CA file is wrong."),
    Entry("uplink-tls-files", "problem", "uplink",
          "The gateway cannot read its own certificate or key (last error: {error}).",
          "Run gatewayctl selftest; if the files are missing or damaged, re-enrol the router "
          "(gatewayctl enrol) with a token from the provider."),
    # -- the outbox and readings ---------------------------------------------------------------
    Entry("outbox-backlog-old", "problem", "outbox",
          "Readings have been waiting {age} for delivery ({depth} records); the provider has "
          "not received them.",
          "Fix the connection to the provider (see the uplink finding); if the uplink shows "
          f"connected, {_SUPPORT}."),
    Entry("readings-unusable", "warning", "ingest",
          "{count} readings could not be used (for example an unknown unit) and were reported "
          "to the provider as gaps instead.",
          "Check the device's settings (units, test type) against the episode's device list; "
          "tell the provider which device it was."),
    # -- devices (DeviceHealth.state) ----------------------------------------------------------
    Entry("device-never-seen", "warning", "device",
          "The device has not been in contact since the gateway started {uptime} ago "
          "(state {state}).",
          "Check that the device is switched on and near the router, and take a test "
          "measurement with it."),
    Entry("device-out-of-range", "warning", "device",
          "The device is not in reach right now (not advertising). That is normal between "
          "measurements for devices that wake up only to send.",
          "If a measurement was taken and does not arrive, bring the device within a few metres "
          "of the router and check its batteries."),
    Entry("device-pairing-failed", "problem", "device",
          "Pairing with the device failed: the passkey does not match or the device refused.",
          "Compare the passkey in the episode's device binding with the one on the device; "
          "remove the old pairing on the device and measure again."),
    Entry("device-failing", "problem", "device",
          "Connections to the device keep failing after it was found.",
          "Switch the device off and on (or change its batteries); if it persists, replace the "
          "device."),
    Entry("bluetooth-unavailable", "problem", "bluetooth",
          "The router's Bluetooth service is not running or its adapter is missing; no "
          "Bluetooth device can be read ({devices}).",
          "Restart Bluetooth (sudo systemctl restart bluetooth); check that the Bluetooth "
          "adapter is plugged in (bluetoothctl list)."),
    Entry("device-unplugged", "problem", "device",
          "The device is not connected: its serial port is missing (unplugged or switched off).",
          "Check the device's USB cable and power; the gateway reconnects by itself once it is "
          "back."),
    Entry("device-port-busy", "problem", "device",
          "The device's port is held by another program.",
          "Stop the other program (ModemManager, a terminal program, a second gateway) or "
          "exclude the device from ModemManager (see systemd/README)."),
    Entry("device-port-no-permission", "problem", "device",
          "The gateway may not open the device's port.",
          "Check the udev rule that gives the device to the homecare group (see systemd/README), "
          "then unplug and replug the device."),
    Entry("device-port-settings", "problem", "device",
          "The device's port refused the configured settings or is not a serial port.",
          "Check the port path and the line settings (baud rate, parity, flow control) in the "
          "configuration against the device's manual."),
    Entry("device-port-failing", "problem", "device",
          "Reading from the device fails ({state}).",
          "Replug the device; if it repeats, replace the USB-serial adapter or the cable."),
    # -- the 5G modem (its link snapshot) ------------------------------------------------------
    Entry("modem-not-answering", "problem", "modem",
          "The 5G modem does not answer on its control port.",
          "Switch the modem off and on; check its USB connection."),
    Entry("modem-no-sim", "problem", "modem",
          "The 5G modem has no SIM card.",
          "Check that the SIM card is inserted the right way in the modem; restart the modem."),
    Entry("modem-sim-unusable", "problem", "modem",
          "The SIM card in the 5G modem cannot be used ({sim}).",
          "Ask the provider: the SIM is locked (PIN/PUK) or damaged and must be unlocked or "
          "replaced."),
    Entry("modem-registration-denied", "problem", "modem",
          "The mobile network refuses the 5G modem's SIM card.",
          "Ask the provider to check the SIM's contract with the mobile operator."),
    Entry("modem-no-signal", "problem", "modem",
          "The 5G modem has no mobile signal (signal {rssi}).",
          "Move the router or its antenna to a window or higher up; check the antenna cables."),
    Entry("modem-not-registered", "problem", "modem",
          "The 5G modem is not on the mobile network (registration {registration}, "
          "signal {rssi}).",
          "Wait a few minutes; if it stays, restart the modem and check the SIM."),
    Entry("modem-weak-signal", "warning", "modem",
          "The 5G modem's signal is weak ({rssi}); the link may drop in and out.",
          "Move the router or its antenna to a window or higher up."),
    # -- links, certificate, clock -------------------------------------------------------------
    Entry("vpn-unchecked", "warning", "vpn",
          "The VPN tunnel ({interface}) cannot be checked: {error}.",
          "Run gatewayctl uplink-test; check that the gateway service may read the VPN state "
          "(CAP_NET_ADMIN in its unit file)."),
    Entry("certificate-expired", "problem", "certificate",
          "The router's certificate expired on {not_after}: the provider will refuse it.",
          "Check the router's date and time first; if they are right, re-enrol the router "
          "(gatewayctl enrol) with a token from the provider."),
    Entry("certificate-unreadable", "problem", "certificate",
          "The router's certificate could not be read, so its expiry is unknown.",
          "Run gatewayctl selftest; if the file is missing or damaged, re-enrol the router "
          "(gatewayctl enrol)."),
    Entry("clock-not-synchronised", "warning", "clock",
          "The router's clock is not synchronised ({source}, offset {offset}); reading times "
          "and certificate checks depend on it.",
          "Check the internet link; synchronisation follows by itself once time servers are "
          "reachable (chronyc tracking shows the state)."),
    Entry("clock-unchecked", "warning", "clock",
          "The router's clock synchronisation cannot be checked ({source}: {error}).",
          "Check that chrony is installed and running (sudo systemctl status chrony)."),
    # -- power (the health report's power section) ----------------------------------------------
    Entry("power-cut-shutdown", "warning", "power",
          "The gateway stopped cleanly at {at} because the battery ran low in a power cut "
          "(outage since {since}), and started again when the power came back. Nothing stored "
          "was lost; this was not a crash.",
          "Nothing to do for the gateway. Devices without memory could not be read while the "
          "router was off: check with the patient whether a measurement was missed."),
    Entry("power-unknown", "warning", "power",
          "The UPS answers but does not say whether it runs on mains or battery ({reason}).",
          "Check the UPS model against the NUT hardware list; upsc {ups} shows what it "
          "reports."),
    Entry(UNKNOWN_ALARM, "problem", "gateway",
          "The gateway raised an alarm this gatewayctl does not know: {alarm}.",
          f"Update gatewayctl with the gateway software, and {_SUPPORT}."),
)

CATALOGUE: dict[str, Entry] = {e.code: e for e in _ENTRIES}
UNKNOWN_ENTRY = CATALOGUE[UNKNOWN_ALARM]
