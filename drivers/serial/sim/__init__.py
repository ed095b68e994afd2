"""Virtual serial devices on pseudo-terminal pairs, opened by the real pyserial in the drivers.

Thread API (tests, demos): :class:`AstmAnalyserSim`, :class:`NoninSim`, :class:`Cms50Sim`,
:class:`ModemSim`; process API (``kill -9`` the device): :class:`SimProcess` around
``python -m drivers.serial.sim``.
"""

from drivers.serial.sim.analyser import AnalyserFaults, AstmAnalyserSim, crp_message
from drivers.serial.sim.modem import ModemSim, ModemSimState
from drivers.serial.sim.oximeter import Cms50Sim, NoninSim, OximeterState, Phase
from drivers.serial.sim.process import SimProcess

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
