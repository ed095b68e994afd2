"""Virtual serial devices on pseudo-terminal pairs, opened by the real pyserial in the drivers.

Thread API (tests, demos): :class:`AstmAnalyserSim`, :class:`NoninSim`, :class:`Cms50Sim`,
:class:`ModemSim`; process API (``kill -9`` the device): :class:`SimProcess` around
``python -m rig.serial``.

May import the router's packages (drivers.serial's framers) and the rest of rig/; never provider.
"""

from rig.serial.analyser import AnalyserFaults, AstmAnalyserSim, crp_message
from rig.serial.modem import ModemSim, ModemSimState
from rig.serial.oximeter import Cms50Sim, NoninSim, OximeterState, Phase
from rig.serial.process import SimProcess

__all__ = [
    "AnalyserFaults",
    "AstmAnalyserSim",
    "Cms50Sim",
    "ModemSim",
    "ModemSimState",
    "NoninSim",
    "OximeterState",
    "Phase",
    "SimProcess",
    "crp_message",
]
