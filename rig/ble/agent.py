"""org.bluez.AgentManager1 on /org/bluez, and asking the registered agent during Pair.

bleak never registers an agent; a headless gateway does (reference: bluez-dbus.md, "Pairing on a
headless router"). During Pair bluetoothd asks the agent of the caller if it registered one,
else the default agent. Which agent method is used follows the device's association model and
the agent's IO capability (Core Vol 3 Part H 2.3.5.1, simplified to what health devices use):

- passkey entry (the device displays six digits): ``RequestPasskey(device) -> u`` when the agent
  can type (KeyboardOnly, KeyboardDisplay); otherwise, or with no agent, the authenticated
  pairing the device insists on cannot happen: AuthenticationFailed.
- numeric comparison: ``RequestConfirmation(device, passkey)`` for DisplayYesNo /
  KeyboardDisplay agents; AuthenticationFailed otherwise.
- just works on a device that requires bonding: ``RequestAuthorization(device)`` if there is an
  agent, accepted without asking if there is none.

Agent error replies map as bluetoothd maps them: Rejected -> AuthenticationRejected, Canceled ->
AuthenticationCanceled; no answer in time -> AuthenticationTimeout.
"""

from __future__ import annotations

from dataclasses import dataclass

from dbus_fast import Message, MessageType
from dbus_fast.errors import DBusError

from rig.ble.objects import NO_REPLY, DBusObject, ObjectTree, Reply, bluez_error
from rig.ble.peripheral import Pairing, PairingMethod

AGENT_MANAGER_IFACE = "org.bluez.AgentManager1"
AGENT_IFACE = "org.bluez.Agent1"
CAPABILITIES = ("DisplayOnly", "DisplayYesNo", "KeyboardOnly", "NoInputNoOutput",
                "KeyboardDisplay")
_CAN_TYPE = ("KeyboardOnly", "KeyboardDisplay")
_CAN_CONFIRM = ("DisplayYesNo", "KeyboardDisplay")


@dataclass(frozen=True, slots=True)
class Agent:
    owner: str  # unique bus name of the process that registered it
    path: str
    capability: str


class AgentManager:
    def __init__(self, tree: ObjectTree, timeout_s: float) -> None:
        self._tree = tree
        self._timeout_s = timeout_s
        self.agents: dict[str, Agent] = {}  # owner -> agent (one per connection, as bluetoothd)
        self.default: str | None = None  # owner of the default agent

    def dbus_object(self) -> DBusObject:
        return DBusObject("/org/bluez", {AGENT_MANAGER_IFACE: {}}, methods={
            (AGENT_MANAGER_IFACE, "RegisterAgent"): self._register,
            (AGENT_MANAGER_IFACE, "UnregisterAgent"): self._unregister,
            (AGENT_MANAGER_IFACE, "RequestDefaultAgent"): self._request_default,
        })

    async def _register(self, msg: Message) -> Reply:
        path, capability = msg.body
        owner = msg.sender or ""
        if owner in self.agents:
            raise bluez_error("AlreadyExists", "Already Exists")
        capability = capability or "KeyboardDisplay"
        if capability not in CAPABILITIES:
            raise bluez_error("InvalidArguments", "Invalid arguments in method call")
        self.agents[owner] = Agent(owner, path, capability)
        return NO_REPLY

    def _own(self, msg: Message) -> Agent:
        agent = self.agents.get(msg.sender or "")
        if agent is None or agent.path != msg.body[0]:
            raise bluez_error("DoesNotExist", "Does Not Exist")
        return agent

    async def _unregister(self, msg: Message) -> Reply:
        agent = self._own(msg)
        self.client_gone(agent.owner)
        return NO_REPLY

    async def _request_default(self, msg: Message) -> Reply:
        self.default = self._own(msg).owner
        return NO_REPLY

    def client_gone(self, owner: str) -> None:
        self.agents.pop(owner, None)
        if self.default == owner:
            self.default = None

    def agent_for(self, caller: str) -> Agent | None:
        if caller in self.agents:
            return self.agents[caller]
        return self.agents.get(self.default) if self.default else None

    async def authenticate(self, device_path: str, pairing: Pairing, caller: str) -> None:
        """Run the agent side of pairing; DBusError (Authentication*) when it does not succeed."""
        agent = self.agent_for(caller)
        method = pairing.method
        if method is PairingMethod.JUST_WORKS:
            if agent is not None:
                await self._ask(agent, "RequestAuthorization", "o", [device_path])
            return
        if method is PairingMethod.PASSKEY_ENTRY:
            if agent is None or agent.capability not in _CAN_TYPE:
                raise bluez_error("AuthenticationFailed", "Authentication Failed")
            reply = await self._ask(agent, "RequestPasskey", "o", [device_path])
            if not reply.body or reply.body[0] != pairing.passkey:
                raise bluez_error("AuthenticationFailed", "Authentication Failed")
            return
        if agent is None or agent.capability not in _CAN_CONFIRM:
            raise bluez_error("AuthenticationFailed", "Authentication Failed")
        await self._ask(agent, "RequestConfirmation", "ou", [device_path, pairing.passkey])

    async def _ask(self, agent: Agent, member: str, signature: str, body: list[object]
                   ) -> Message:
        try:
            reply = await self._tree.call(Message(
                destination=agent.owner, path=agent.path, interface=AGENT_IFACE, member=member,
                signature=signature, body=body), self._timeout_s)
        except TimeoutError:
            raise bluez_error("AuthenticationTimeout", "Authentication Timeout") from None
        if reply.message_type is MessageType.ERROR:
            raise _agent_error(reply.error_name or "")
        return reply


def _agent_error(name: str) -> DBusError:
    if name == "org.bluez.Error.Rejected":
        return bluez_error("AuthenticationRejected", "Authentication Rejected")
    if name == "org.bluez.Error.Canceled":
        return bluez_error("AuthenticationCanceled", "Authentication Canceled")
    return bluez_error("AuthenticationFailed", "Authentication Failed")
