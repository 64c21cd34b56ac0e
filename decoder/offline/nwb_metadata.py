"""What an NWB export says about the session and the mouse: the ``[export.nwb]`` table.

The rig config (``--config``) holds it next to ``[decoder]``::

    [export.nwb]
    session_description = "V1 decoding, natural movie clips"
    experiment_description = "live reconstruction of natural movies from V1"
    experimenter = ["Doe, Jane"]
    lab = "Visual Coding Lab"
    institution = "Some University"
    subject_id = "M123"
    species = "Mus musculus"      # the default
    sex = "F"                     # M, F, U or O
    age = "P90D"                  # ISO 8601 duration
    genotype = "Ai162 x Slc17a7-Cre"
    subject_description = "head-fixed on a treadmill"
    include_subject = true        # false: no Subject in the file
    indicator = "GCaMP6s"
    location = "VISp"
    excitation_lambda_nm = 920.0

Nothing is required: a missing value is left out of the file (or a neutral default), and
``nwbinspector`` names what a complete record would add.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from cortexcast.core.config import load_settings

SECTION = "export.nwb"
_ONE = r"P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?"
_ISO_DURATION = re.compile(rf"^{_ONE}(/{_ONE})?$")
"""An ISO 8601 duration ("P90D", "P12W", "P1Y2M"), or a range of two ("P90D/P120D")."""


@dataclass(frozen=True)
class NwbMetadata:
    """Session, subject and imaging-plane metadata of an NWB export (``[export.nwb]``)."""

    session_description: str = "two-photon imaging of V1 during natural movie clips, " \
                               "recorded with cortexcast"
    experiment_description: str = ""
    """What the experiment was for (a sentence or two)."""
    experimenter: tuple[str, ...] | str = ()
    """People who ran the session, "Last, First" each (one name: a string)."""
    lab: str = ""
    institution: str = ""
    subject_id: str = ""
    species: str = "Mus musculus"
    sex: str = "U"
    """M, F, U (unknown) or O (other)."""
    age: str = ""
    """ISO 8601 duration ("P90D"), or a range ("P90D/P120D")."""
    genotype: str = ""
    strain: str = ""
    subject_description: str = ""
    include_subject: bool = True
    """False: the file holds no Subject (e.g. to share the data without the animal's record)."""
    device: str = "two-photon microscope"
    """Description of the microscope."""
    indicator: str = "unknown"
    """The calcium indicator (GCaMP6s, ...)."""
    location: str = "VISp"
    """Brain area of the imaging plane."""
    excitation_lambda_nm: float = 920.0
    emission_lambda_nm: float = 510.0
    keywords: tuple[str, ...] = field(default=("two-photon", "V1", "decoding"))

    def __post_init__(self) -> None:
        if isinstance(self.experimenter, str):  # a single name given as a string
            object.__setattr__(self, "experimenter", (self.experimenter,))
        if self.sex not in ("M", "F", "U", "O"):
            raise ValueError(f"sex must be one of M, F, U, O, got {self.sex!r}")
        if self.age and not _ISO_DURATION.match(self.age):
            raise ValueError(f"age must be an ISO 8601 duration such as 'P90D' (90 days) or "
                             f"a range 'P90D/P120D', got {self.age!r}")
        if not self.session_description.strip():
            raise ValueError("session_description must not be empty")
        if self.excitation_lambda_nm <= 0 or self.emission_lambda_nm <= 0:
            raise ValueError("excitation_lambda_nm and emission_lambda_nm must be > 0")


def load_nwb_metadata(config: str | Path | None) -> NwbMetadata:
    """``[export.nwb]`` of ``config`` (defaults without a file); ConfigError on a bad key."""
    return load_settings(NwbMetadata, config, SECTION)
