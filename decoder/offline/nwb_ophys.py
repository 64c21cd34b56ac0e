"""The NWB file itself and its optical physiology: subject, imaging plane, frames, ROIs, traces.

Used by :func:`cortexcast.decoder.offline.nwb_export.export_nwb` (needs ``pynwb``).
"""

from __future__ import annotations

import logging
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
from hdmf.data_utils import DataChunkIterator
from pynwb import NWBFile
from pynwb.file import Subject
from pynwb.ophys import (DfOverF, Fluorescence, ImageSegmentation, OpticalChannel,
                         TwoPhotonSeries)

from cortexcast.core.rois import ROISet
from cortexcast.decoder.offline.export import ExportError
from cortexcast.decoder.offline.nwb_content import chunk_frames, compressed, timing
from cortexcast.decoder.offline.nwb_metadata import NwbMetadata
from cortexcast.stream.recording import RecordingReader

log = logging.getLogger("export")

if TYPE_CHECKING:
    from cortexcast.decoder.offline.session_frames import TiffFrames


def new_file(meta: NwbMetadata, start: datetime, reader: RecordingReader) -> NWBFile:
    """An NWBFile with the session's and (unless ``include_subject`` is false) the mouse's
    metadata."""
    optional = {k: v for k, v in (("lab", meta.lab), ("institution", meta.institution),
                                              ("experiment_description",
                                               meta.experiment_description))
                if v}
    if meta.experimenter:
        optional["experimenter"] = list(meta.experimenter)
    if meta.keywords:
        optional["keywords"] = list(meta.keywords)
    nwb = NWBFile(session_description=meta.session_description,
                  identifier=str(uuid.uuid4()), session_start_time=start,
                  session_id=Path(reader.path).stem,
                  source_script=f"cortexcast export (recording {Path(reader.path).name}, "
                                f"file id {reader.file_id.hex()})",
                  source_script_file_name="cortexcast", **optional)
    if not meta.include_subject:
        log.warning("[export.nwb] include_subject = false: the file holds no Subject "
                    "(nwbinspector reports this as CRITICAL; DANDI requires one)")
    elif not meta.age:
        log.warning("[export.nwb] has no age: nwbinspector reports a Subject without age as "
                    "CRITICAL; set age = \"P90D\" (ISO 8601)")
    if meta.include_subject:
        subject = {k: v for k, v in (("age", meta.age), ("genotype", meta.genotype),
                                     ("strain", meta.strain),
                                     ("description", meta.subject_description)) if v}
        nwb.subject = Subject(subject_id=meta.subject_id or "unknown", species=meta.species,
                              sex=meta.sex, **subject)
    return nwb


def _pixel_masks(rois: ROISet) -> Iterator[list[tuple[int, int, float]]]:
    """Each ROI's soma weights as NWB pixel-mask rows ``(x, y, weight)``."""
    m = rois.masks.tocsr()
    width = rois.frame_shape[1]
    for r in range(m.shape[0]):
        cols = m.indices[m.indptr[r]:m.indptr[r + 1]]
        w = m.data[m.indptr[r]:m.indptr[r + 1]]
        yield [(int(c % width), int(c // width), float(v)) for c, v in zip(cols, w)]


def _two_photon(plane: Any, t_frames: np.ndarray, rate: float,
                pixels: Iterator[np.ndarray] | None, shape: tuple[int, int],
                link: tuple[TiffFrames, np.ndarray, Path] | None) -> TwoPhotonSeries:
    if link is not None:
        tiffs, t_all, base = link
        if tiffs.channels != 1:
            raise ExportError(f"{tiffs.folder}: the TIFFs interleave {tiffs.channels} "
                              "channels, which an NWB external link cannot pick from; export "
                              "without --nwb-link-tiffs (the frames are copied)")
        starts = np.concatenate([[0], np.cumsum(tiffs.pages)[:-1]]).astype(np.int64)
        kw = dict(name="TwoPhotonSeries", imaging_plane=plane, format="external",
                  external_file=[os.path.relpath(p.resolve(), base) for p in tiffs.files],
                  starting_frame=starts.tolist(), unit="n.a.", dimension=[shape[1], shape[0]],
                  description="ScanImage's TIFF files (paths relative to this file)")
        tm = timing(t_all)
        if "rate" in tm:  # a rate needs num_samples (no data to count), new in pynwb 3
            try:
                return TwoPhotonSeries(**kw, **tm, num_samples=len(t_all))
            except TypeError:
                pass
        return TwoPhotonSeries(**kw, timestamps=t_all)
    assert pixels is not None
    n = len(t_frames)
    first = next(pixels, None)
    if first is None:
        raise ExportError("no imaging frame to write")
    dtype = np.asarray(first).dtype
    chunks = chunk_frames(shape, dtype.itemsize, n)

    def all_frames() -> Iterator[np.ndarray]:
        yield np.asarray(first)
        for px in pixels:
            yield np.asarray(px, dtype)

    data = DataChunkIterator(data=all_frames(), maxshape=(n, *shape), dtype=dtype,
                             buffer_size=chunks[0])
    return TwoPhotonSeries(name="TwoPhotonSeries", imaging_plane=plane,
                           data=compressed(data, chunks), unit="n.a.",
                           description="imaging frames as the daq published them",
                           **timing(t_frames))


def add_ophys(nwb: NWBFile, meta: NwbMetadata, rois: ROISet, traces: Any,
              t_frames: np.ndarray, rate: float, pixels: Iterator[np.ndarray] | None,
              shape: tuple[int, int], link: tuple[TiffFrames, np.ndarray, Path] | None
              ) -> None:
    """Device, imaging plane, TwoPhotonSeries, PlaneSegmentation and the ROI traces
    (``traces``: a :class:`~.nwb_export.Traces`)."""
    device = nwb.create_device(name="Microscope", description=meta.device)
    channel = OpticalChannel(name="OpticalChannel", description="green (functional) channel",
                             emission_lambda=meta.emission_lambda_nm)
    plane = nwb.create_imaging_plane(
        name="ImagingPlane", optical_channel=channel, imaging_rate=float(rate),
        description=f"field of view, {shape[0]}x{shape[1]} pixels", device=device,
        excitation_lambda=meta.excitation_lambda_nm, indicator=meta.indicator,
        location=meta.location)
    series = _two_photon(plane, t_frames, rate, pixels, shape, link)
    nwb.add_acquisition(series)
    ophys = nwb.create_processing_module("ophys", "ROIs and their traces from the live "
                                                  "decoder's feature pipeline")
    segmentation = ImageSegmentation(name="ImageSegmentation")
    ophys.add(segmentation)
    seg = segmentation.create_plane_segmentation(
        name="PlaneSegmentation", description="the ROI set the decoder extracts from (soma "
        "weights; each ROI's weights sum to 1)", imaging_plane=plane,
        reference_images=series)
    for mask in _pixel_masks(rois):
        seg.add_roi(pixel_mask=mask)
    tm = timing(t_frames)
    kind = ("DfOverF", "n.a.", "dF/F against the running baseline") if traces.kind == "dff" \
        else ("Deconvolved", "a.u.", "online-deconvolved activity")
    series_of = (
        ("Fluorescence", traces.fluorescence, "a.u.",
         "neuropil-corrected fluorescence (F - coef * neuropil), after motion correction "
         "when enabled; NaN: frame rejected"),
        (kind[0], traces.activity, kind[1],
         f"{kind[2]}, exactly the features the live decoder feeds its model; NaN: frame "
         "rejected"))
    for name, data, unit, description in series_of:
        # the container joins the file first, so that its series' ROI region shares an
        # ancestor with the PlaneSegmentation (hdmf warns otherwise)
        container = DfOverF(name=name) if name == "DfOverF" else Fluorescence(name=name)
        ophys.add(container)
        region = seg.create_roi_table_region(region=list(range(rois.n_neurons)),
                                             description="every ROI")
        container.create_roi_response_series(name="RoiResponseSeries", data=compressed(data),
                                             rois=region, unit=unit, description=description,
                                             **tm)
