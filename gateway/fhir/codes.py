"""The measurement vocabulary: IEEE 11073-10101 (MDC) codes, their LOINC terms and UCUM units.

Every reading is coded with its MDC code (PHD IG: "there shall be one coding element using the
MDC coding system"); vital signs also carry the LOINC code the FHIR vital-signs profiles ask for. A
LOINC term fixes the measured property, so a term is only attached when the reading's unit fits it
(41653-7 is a mass concentration: putting it on a value in mmol/L would be a silent error). Where no
LOINC term is known for certain the tuple is empty: a missing coding is safe, a wrong one is not.

MDC codes are 32-bit: partition * 2**16 + term code (11073-10101). UCUM units are the case-sensitive
codes of http://unitsofmeasure.org.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

MDC_SYSTEM = "urn:iso:std:iso:11073:10101"
LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"

# --- Measurement types (partition 2 = SCADA unless noted) ---------------------------------------
MDC_TEMP_BODY = 150364
MDC_PRESS_BLD_NONINV = 150020
MDC_PRESS_BLD_NONINV_SYS = 150021
MDC_PRESS_BLD_NONINV_DIA = 150022
MDC_PRESS_BLD_NONINV_MEAN = 150023
MDC_PULS_RATE_NON_INV = 149546  # pulse rate reported by a blood-pressure cuff
MDC_PULS_OXIM_SAT_O2 = 150456
MDC_PULS_OXIM_PULS_RATE = 149530
MDC_ECG_HEART_RATE = 147842  # also what the BLE Heart Rate profile maps to
MDC_ECG_TIME_PD_RR_GL = 147240  # 2::16168, R-R interval (BLE Heart Rate RR field)
MDC_MASS_BODY_ACTUAL = 188736
MDC_LEN_BODY_ACTUAL = 188740
MDC_RATIO_MASS_BODY_LEN_SQ = 188752  # body mass index
MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD = 160184  # 2::29112
MDC_CONC_GLU_CAPILLARY_PLASMA = 160188  # 2::29116
MDC_CONC_GLU_ISF = 160212  # 2::29140, interstitial fluid: what a CGM sensor measures
MDC_ATTR_VAL_BATT_CHARGE = 67996  # 1::2460, battery level (PHD IG: reported as an Observation)

# --- Spirometry (Generic Health Sensor spirometers; 11073-10101 partition 2). Term codes 21512
# and 21514 are the ones IEEE 11073-10421 (peak expiratory flow monitor) names; 188928 / 188948
# and the 2::21636 waveform as the MDC code system (HL7 terminology server, 2024-12-05) lists them.
MDC_FLOW_AWAY_EXP_FORCED_PEAK = 152584  # 2::21512, peak expiratory flow (PEF)
MDC_VOL_AWAY_EXP_FORCED_1S = 152586  # 2::21514, FEV1
MDC_VOL_AWAY_EXP_FORCED_CAPACITY = 188928  # 2::57856, forced vital capacity (FVC)
MDC_RATIO_AWAY_EXP_FORCED_1S_FVC = 188948  # 2::57876, FEV1/FVC
MDC_VOL_AWAY = 152708  # 2::21636, airway volume: a spirometry waveform (volume-time curve)

# --- Point-of-care laboratory results (serial analysers, ASTM) ----------------------------------
MDC_CONC_HBA1C = 160220  # 2::29148, ISO/IEEE 11073-10417
MDC_RATIO_INR_COAG = 160260  # 2::29188, ISO/IEEE 11073-10418
MDC_CONC_GLU_UNDETERMINED_PLASMA = 160368  # 2::29296, plasma glucose, sample site not stated
# No standard MDC term is known to us for CRP, haemoglobin or a white-cell count. IEEE 11073-10101
# keeps term codes 0xF000-0xFFFF of each partition for private use; these are ours, and the LOINC
# coding is the one that identifies them to a receiver.
_PRIVATE = 2 * 65536 + 0xF000
MDC_PRIVATE_CRP = _PRIVATE + 1
MDC_PRIVATE_HAEMOGLOBIN = _PRIVATE + 2
MDC_PRIVATE_WBC = _PRIVATE + 3
PRIVATE_MDC_CODES = frozenset({MDC_PRIVATE_CRP, MDC_PRIVATE_HAEMOGLOBIN, MDC_PRIVATE_WBC})

# --- Device and gateway description (PHD IG, PhdDevice / PhgDevice profiles) -------------------
MDC_MOC_VMS_MDS_SIMP = 65573  # Device.type of every PHD
MDC_MOC_VMS_MDS_AHD = 531981  # Device.type of the PHG (the gateway)
MDC_TIME_SYNC_PROTOCOL = 68220  # Device.property.type: how the gateway clock is synchronised
MDC_ID_PROD_SPEC_SW = 531975  # Device.version.type: software revision


@dataclass(frozen=True, slots=True)
class Loinc:
    """One LOINC term and the UCUM units its property (Temp, Pres, MCnc, SCnc…) admits."""

    code: str
    display: str
    units: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CodeInfo:
    """What we know about one MDC measurement type."""

    mdc_code: int
    reference_id: str  # the normative 11073-10101 reference id, e.g. "MDC_TEMP_BODY"
    display: str
    units: tuple[str, ...]  # admitted UCUM units; the first is the default
    loinc: tuple[Loinc, ...] = ()  # empty: no standard term known for certain
    category: str | None = None  # http://terminology.hl7.org/CodeSystem/observation-category

    @property
    def unit(self) -> str:
        """The default UCUM unit."""
        return self.units[0]

    def loinc_for(self, unit: str) -> tuple[Loinc, ...]:
        """The LOINC terms that are correct for a reading in ``unit`` (possibly none)."""
        return tuple(term for term in self.loinc if unit in term.units)


_TEMP = ("Cel", "[degF]")
_PRESS = ("mm[Hg]", "kPa")
_GLU = ("mg/dL", "mmol/L")
_VITAL = "vital-signs"
# HL7 CGM IG (STU1) files sensor glucose readings under "laboratory"; we do the same for meters.
_LAB = "laboratory"
_HEART_RATE = Loinc("8867-4", "Heart rate", ("/min",))

_ENTRIES = (
    CodeInfo(
        MDC_TEMP_BODY,
        "MDC_TEMP_BODY",
        "Body temperature",
        _TEMP,
        (Loinc("8310-5", "Body temperature", _TEMP),),
        _VITAL,
    ),
    CodeInfo(
        MDC_PRESS_BLD_NONINV,
        "MDC_PRESS_BLD_NONINV",
        "Blood pressure",
        _PRESS,
        (Loinc("85354-9", "Blood pressure panel with all children optional", _PRESS),),
        _VITAL,
    ),
    CodeInfo(
        MDC_PRESS_BLD_NONINV_SYS,
        "MDC_PRESS_BLD_NONINV_SYS",
        "Systolic blood pressure",
        _PRESS,
        (Loinc("8480-6", "Systolic blood pressure", _PRESS),),
        _VITAL,
    ),
    CodeInfo(
        MDC_PRESS_BLD_NONINV_DIA,
        "MDC_PRESS_BLD_NONINV_DIA",
        "Diastolic blood pressure",
        _PRESS,
        (Loinc("8462-4", "Diastolic blood pressure", _PRESS),),
        _VITAL,
    ),
    CodeInfo(
        MDC_PRESS_BLD_NONINV_MEAN,
        "MDC_PRESS_BLD_NONINV_MEAN",
        "Mean blood pressure",
        _PRESS,
        (Loinc("8478-0", "Mean blood pressure", _PRESS),),
        _VITAL,
    ),
    # FHIR's vital-signs heart-rate profile uses 8867-4 for pulse rate too; the PHD IG's bundle
    # example codes MDC_PULS_OXIM_PULS_RATE the same way.
    CodeInfo(
        MDC_PULS_RATE_NON_INV,
        "MDC_PULS_RATE_NON_INV",
        "Pulse rate (blood pressure monitor)",
        ("/min",),
        (_HEART_RATE,),
        _VITAL,
    ),
    CodeInfo(
        MDC_PULS_OXIM_SAT_O2,
        "MDC_PULS_OXIM_SAT_O2",
        "Oxygen saturation (SpO2)",
        ("%",),
        (
            Loinc("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", ("%",)),
            # 2708-6 is the code the FHIR R4 oxygen-saturation vital-signs profile requires.
            Loinc("2708-6", "Oxygen saturation in Arterial blood", ("%",)),
        ),
        _VITAL,
    ),
    CodeInfo(
        MDC_PULS_OXIM_PULS_RATE,
        "MDC_PULS_OXIM_PULS_RATE",
        "Pulse rate (pulse oximeter)",
        ("/min",),
        (_HEART_RATE,),
        _VITAL,
    ),
    CodeInfo(
        MDC_ECG_HEART_RATE, "MDC_ECG_HEART_RATE", "Heart rate", ("/min",), (_HEART_RATE,), _VITAL
    ),
    # No LOINC: we know of no vital-sign term for a single R-R interval that we could cite.
    CodeInfo(MDC_ECG_TIME_PD_RR_GL, "MDC_ECG_TIME_PD_RR_GL", "R-R interval", ("ms", "s")),
    CodeInfo(
        MDC_MASS_BODY_ACTUAL,
        "MDC_MASS_BODY_ACTUAL",
        "Body weight",
        ("kg", "[lb_av]", "g"),
        (Loinc("29463-7", "Body weight", ("kg", "[lb_av]", "g")),),
        _VITAL,
    ),
    CodeInfo(
        MDC_LEN_BODY_ACTUAL,
        "MDC_LEN_BODY_ACTUAL",
        "Body height",
        ("cm", "m", "[in_i]"),
        (Loinc("8302-2", "Body height", ("cm", "m", "[in_i]")),),
        _VITAL,
    ),
    CodeInfo(
        MDC_RATIO_MASS_BODY_LEN_SQ,
        "MDC_RATIO_MASS_BODY_LEN_SQ",
        "Body mass index",
        ("kg/m2",),
        (Loinc("39156-5", "Body mass index (BMI) [Ratio]", ("kg/m2",)),),
        _VITAL,
    ),
    CodeInfo(
        MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD,
        "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD",
        "Glucose, capillary whole blood",
        _GLU,
        (
            Loinc("41653-7", "Glucose [Mass/volume] in Capillary blood by Glucometer", ("mg/dL",)),
            Loinc(
                "14743-9", "Glucose [Moles/volume] in Capillary blood by Glucometer", ("mmol/L",)
            ),
        ),
        _LAB,
    ),
    # No LOINC: we found no term for glucose in *capillary plasma* (the plasma-calibrated value
    # most meters show); 2345-7 / 14749-6 are serum-or-plasma lab terms and would misstate it.
    CodeInfo(
        MDC_CONC_GLU_CAPILLARY_PLASMA,
        "MDC_CONC_GLU_CAPILLARY_PLASMA",
        "Glucose, capillary plasma",
        _GLU,
        (),
        _LAB,
    ),
    # LOINC terms as used by the HL7 CGM IG (STU1) for sensor readings.
    CodeInfo(
        MDC_CONC_GLU_ISF,
        "MDC_CONC_GLU_ISF",
        "Glucose, interstitial fluid (CGM)",
        _GLU,
        (
            Loinc("99504-3", "Glucose [Mass/volume] in Interstitial fluid", ("mg/dL",)),
            Loinc("105272-9", "Glucose [Moles/volume] in Interstitial fluid", ("mmol/L",)),
        ),
        _LAB,
    ),
    # Spirometry. LOINC 20150-9 "FEV1" and 19868-9 "Forced vital capacity [Volume] Respiratory
    # system by Spirometry" are volumes (L), as public FHIR profiles and CDA documents code them.
    # No LOINC for PEF, the ratio or the curve: the PEF terms name the instrument (peak flow meter
    # vs spirometry) and we could not confirm which one applies.
    CodeInfo(MDC_VOL_AWAY_EXP_FORCED_1S, "MDC_VOL_AWAY_EXP_FORCED_1S", "FEV1", ("L",),
             (Loinc("20150-9", "FEV1", ("L",)),)),
    CodeInfo(MDC_VOL_AWAY_EXP_FORCED_CAPACITY, "MDC_VOL_AWAY_EXP_FORCED_CAPACITY",
             "Forced vital capacity", ("L",),
             (Loinc("19868-9", "Forced vital capacity [Volume] Respiratory system by Spirometry",
                    ("L",)),)),
    CodeInfo(MDC_RATIO_AWAY_EXP_FORCED_1S_FVC, "MDC_RATIO_AWAY_EXP_FORCED_1S_FVC", "FEV1/FVC",
             ("%", "1")),
    CodeInfo(MDC_FLOW_AWAY_EXP_FORCED_PEAK, "MDC_FLOW_AWAY_EXP_FORCED_PEAK",
             "Peak expiratory flow", ("L/min",)),
    CodeInfo(MDC_VOL_AWAY, "MDC_VOL_AWAY", "Airway volume (spirometry curve)", ("L",)),
    # A device state, not a clinical observation: no LOINC term and no category.
    CodeInfo(MDC_ATTR_VAL_BATT_CHARGE, "MDC_ATTR_VAL_BATT_CHARGE", "Battery level", ("%",)),
    # Laboratory results of point-of-care analysers (ASTM). LOINC terms per admitted unit.
    CodeInfo(
        MDC_PRIVATE_CRP,
        "MDC_PRIVATE_CRP",
        "C-reactive protein",
        ("mg/L", "mg/dL"),
        (
            Loinc(
                "1988-5", "C reactive protein [Mass/volume] in Serum or Plasma", ("mg/L", "mg/dL")
            ),
        ),
        _LAB,
    ),
    CodeInfo(
        MDC_CONC_GLU_UNDETERMINED_PLASMA,
        "MDC_CONC_GLU_UNDETERMINED_PLASMA",
        "Glucose (plasma)",
        _GLU,
        (
            Loinc("2345-7", "Glucose [Mass/volume] in Serum or Plasma", ("mg/dL",)),
            Loinc("14749-6", "Glucose [Moles/volume] in Serum or Plasma", ("mmol/L",)),
        ),
        _LAB,
    ),
    CodeInfo(
        MDC_CONC_HBA1C,
        "MDC_CONC_HBA1C",
        "Haemoglobin A1c",
        ("%", "mmol/mol"),
        (
            Loinc("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", ("%",)),
            Loinc(
                "59261-8",
                "Hemoglobin A1c/Hemoglobin.total in Blood by IFCC protocol",
                ("mmol/mol",),
            ),
        ),
        _LAB,
    ),
    # Point-of-care coagulometers test capillary whole blood: "in Blood", not the plasma 6301-6.
    CodeInfo(
        MDC_RATIO_INR_COAG,
        "MDC_RATIO_INR_COAG",
        "INR",
        ("{INR}",),
        (Loinc("34714-6", "INR in Blood by Coagulation assay", ("{INR}",)),),
        _LAB,
    ),
    CodeInfo(
        MDC_PRIVATE_HAEMOGLOBIN,
        "MDC_PRIVATE_HAEMOGLOBIN",
        "Haemoglobin",
        ("g/dL", "g/L", "mmol/L"),
        (
            Loinc("718-7", "Hemoglobin [Mass/volume] in Blood", ("g/dL", "g/L")),
            Loinc("59260-0", "Hemoglobin [Moles/volume] in Blood", ("mmol/L",)),
        ),
        _LAB,
    ),
    CodeInfo(
        MDC_PRIVATE_WBC,
        "MDC_PRIVATE_WBC",
        "White-cell count",
        ("10*3/uL", "10*9/L"),
        (
            Loinc(
                "6690-2",
                "Leukocytes [#/volume] in Blood by Automated count",
                ("10*3/uL", "10*9/L"),
            ),
        ),
        _LAB,
    ),
)

CODES: Mapping[int, CodeInfo] = MappingProxyType({entry.mdc_code: entry for entry in _ENTRIES})


def info(mdc_code: int) -> CodeInfo | None:
    """What we know about ``mdc_code``, or None for a type outside our vocabulary."""
    return CODES.get(mdc_code)


# PHG time synchronisation methods (PHD IG, PhgDevice profile, MDC_TIME_SYNC_* codes), keyed by the
# names the gateway configuration uses. chrony and ntpd speak NTPv4 (RFC 5905); systemd-timesyncd
# is an SNTP client (RFC 4330); a cellular modem's network time is NITZ on GSM/UMTS and "other
# mobile" on LTE/5G.
TIME_SYNC: Mapping[str, tuple[int, str]] = MappingProxyType(
    {
        "none": (532224, "MDC_TIME_SYNC_NONE"),
        "manual": (532234, "MDC_TIME_SYNC_EBWW"),
        "ntpv3": (532225, "MDC_TIME_SYNC_NTPV3"),
        "ntp": (532226, "MDC_TIME_SYNC_NTPV4"),
        "sntp": (532228, "MDC_TIME_SYNC_SNTPV4330"),
        "gsm": (532233, "MDC_TIME_SYNC_GSM"),
        "mobile": (532237, "MDC_TIME_SYNC_OTHER_MOBILE"),
        "gps": (532238, "MDC_TIME_SYNC_GPS"),
    }
)
TIME_SYNC_OTHER = (532236, "MDC_TIME_SYNC_OTHER")


def time_sync_code(method: str) -> tuple[int, str]:
    """The MDC code and reference id for a configured clock-sync method (OTHER when unknown)."""
    return TIME_SYNC.get(method.strip().lower(), TIME_SYNC_OTHER)
