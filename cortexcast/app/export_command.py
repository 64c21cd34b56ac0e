"""``cortexcast export``: a recorded session -> a training dataset, features as live.

``cortexcast export --recording F.ccr --rois rois.npz --out DIR`` (frames from the
recording) or ``... --tiff-folder TIFS`` (frames from ScanImage's files, the recording holding
sync and stimulus). The features come from the ``[decoder]`` table of ``--config`` (the file
the live decoder runs with; flags override single settings), so train-time and live features
are the same computation (:mod:`cortexcast.decoder.offline.export`).

``--nwb F.nwb`` writes the session as one NWB file (metadata from ``[export.nwb]``,
:mod:`cortexcast.decoder.offline.nwb_export`; the ``nwb`` extra), ``--movie F.gif|F.mp4`` a
side-by-side stimulus | reconstruction movie (:mod:`cortexcast.decoder.offline.session_movie`);
any of ``--out``, ``--nwb``, ``--movie`` may be given together.
"""

from __future__ import annotations

import argparse
import sys


def _tiff_link_folder(args: argparse.Namespace) -> tuple[str, str]:
    """(folder, stem) of the TIFFs an NWB file links to: --tiff-folder, else [daq.tiff] of
    --config when its [daq] source is "tiff"; ("", "") when neither."""
    if args.tiff_folder:
        return args.tiff_folder, args.tiff_stem
    if not args.config:
        return "", ""
    from pathlib import Path

    from cortexcast.core.config import load_table

    daq = load_table(args.config, "daq")
    tiff = daq.get("tiff", {}) if isinstance(daq.get("tiff", {}), dict) else {}
    if daq.get("source") != "tiff" or not tiff.get("folder"):
        return "", ""
    folder = Path(str(tiff["folder"]))
    if not folder.is_absolute():
        folder = Path(args.config).resolve().parent / folder
    return str(folder), args.tiff_stem or str(tiff.get("stem", ""))


def _run_movie(args: argparse.Namespace) -> None:
    from cortexcast.decoder.offline.session_movie import write_session_movie

    pairs = write_session_movie(args.recording, args.movie, frames=args.movie_frames,
                                start_s=args.movie_start, stop_s=args.movie_stop,
                                fps=args.movie_fps, scale=args.movie_scale)
    print(f"export: wrote {args.movie} ({len(pairs.stim_index)} stimulus frames, "
          f"{pairs.paired} with their reconstruction)")


def run(args: argparse.Namespace) -> int:
    from cortexcast.core.config import load_settings
    from cortexcast.core.runtime import setup_logging
    from cortexcast.decoder.live.process import DecoderSettings
    from cortexcast.decoder.offline.export import ExportSettings, export_session

    setup_logging("export", getattr(args, "log_level", "INFO"))
    if not (args.out or args.nwb or args.movie):
        print("cortexcast export: error: give an output: --out DIR (a dataset in the "
              "Sensorium 2023 layout), --nwb F.nwb and/or --movie F.gif|F.mp4",
              file=sys.stderr)
        return 2
    if args.movie:
        from cortexcast.decoder.offline.session_movie import check_target

        check_target(args.movie)  # a wrong suffix fails before the long exports
    try:
        decoder = None
        if args.out or args.nwb:
            decoder = load_settings(DecoderSettings, args.config, "decoder", {
                "rois": args.rois, "rois_format": args.rois_format,
                "frame_rate_hz": args.frame_rate_hz, "activity": args.activity,
                "motion": {"enabled": args.motion, "reference": args.motion_reference}})
        settings = None if not args.out else ExportSettings(
            recording=args.recording, out=args.out, tiff_folder=args.tiff_folder or "",
            first_frame=args.first_frame, tiff_stem=args.tiff_stem,
            tiff_channel=args.tiff_channel, clips=args.clips or "",
            eval_mask=args.eval_mask or "", seed=args.seed,
            oracle_fraction=args.oracle_fraction, force=args.force,
            allow_partial=args.allow_partial, progress=not args.no_progress)
        nwb = _nwb_settings(args) if args.nwb else None
    except ValueError as exc:  # ConfigError included: bad settings, said once
        print(f"cortexcast export: error: {exc}", file=sys.stderr)
        return 2
    if settings is not None:
        export_session(settings, decoder)
    if nwb is not None:
        from cortexcast.decoder.offline.nwb_export import export_nwb

        export_nwb(nwb[0], decoder, nwb[1])
    if args.movie:
        _run_movie(args)
    return 0


def _nwb_settings(args: argparse.Namespace) -> tuple:
    from cortexcast.decoder.offline.nwb_export import NwbSettings, require_pynwb
    from cortexcast.decoder.offline.nwb_metadata import load_nwb_metadata

    require_pynwb()  # before any work: the error names the extra to install
    meta = load_nwb_metadata(args.nwb_meta or args.config)
    folder, stem = (_tiff_link_folder(args) if args.nwb_link_tiffs
                    else (args.tiff_folder or "", args.tiff_stem))
    return NwbSettings(recording=args.recording, out=args.nwb, tiff_folder=folder,
                       first_frame=args.first_frame, tiff_stem=stem,
                       tiff_channel=args.tiff_channel, link_tiffs=args.nwb_link_tiffs,
                       force=args.force, progress=not args.no_progress), meta


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="turn a recorded session into a training dataset (live features)",
        description="Run every imaging frame of a recorded session through the live decoder's "
                    "feature pipeline (motion correction, extraction, neuropil, dF/F, optional "
                    "deconvolution; settings from the [decoder] table of --config, flags on "
                    "top) and write a dataset in the Sensorium 2023 layout: one trial per clip "
                    "presentation, videos from the stimulus stream, behaviour from sync, tiers "
                    "train / oracle (a seeded ~10 % of the training clips) / final_test_main "
                    "(repeated test clips), rois.npz and its fingerprint in meta/rois.json.")
    p.add_argument("--recording", required=True, metavar="F.ccr",
                   help="the session's recording (sync, stimulus identity, and frames unless "
                        "--tiff-folder)")
    p.add_argument("--rois", default=None,
                   help="ROI file of this field of view (default: [decoder] rois of --config)")
    p.add_argument("--out", default=None, metavar="DIR", help="dataset folder to write")
    p.add_argument("--force", action="store_true",
                   help="replace a dataset already in --out (and an existing --nwb file)")
    p.add_argument("--config", default=None, metavar="TOML",
                   help="rig config whose [decoder] table sets the features (frame_rate_hz, "
                        "extraction, motion, activity, deconvolution), as the live decoder")
    g = p.add_argument_group("features (override --config's [decoder])")
    g.add_argument("--frame-rate-hz", type=float, default=None,
                   help="imaging rate (Hz; sets the baseline time constants)")
    g.add_argument("--activity", choices=("dff", "deconvolved"), default=None,
                   help="dF/F or online-deconvolved activity")
    g.add_argument("--motion", action=argparse.BooleanOptionalAction, default=None,
                   help="rigid motion correction before extraction")
    g.add_argument("--motion-reference", default=None, metavar="PATH",
                   help="motion reference image (default: the ROI file's own, else built "
                        "online as the decoder does)")
    g.add_argument("--rois-format", choices=("auto", "cortexcast", "suite2p", "caiman"),
                   default=None, help="ROI file format (default auto)")
    t = p.add_argument_group("frames from ScanImage's TIFF files")
    t.add_argument("--tiff-folder", default=None, metavar="DIR",
                   help="read the frames from ScanImage's TIFFs here instead of the recording")
    t.add_argument("--first-frame", type=int, default=0,
                   help="imaging frame index of the first TIFF page (default 0)")
    t.add_argument("--tiff-stem", default="", help="ScanImage file stem (default: the only one)")
    t.add_argument("--tiff-channel", type=int, default=1,
                   help="saved channel to read, 1 = first (default 1)")
    t.add_argument("--allow-partial", action="store_true",
                   help="TIFFs missing some trials' frames: export the covered trials only")
    d = p.add_argument_group("dataset")
    d.add_argument("--clips", default=None, metavar="DIR",
                   help="the clip set shown (cortexcast clips): tiers from its manifest, "
                        "missing stimulus pixels from its clips (default: tiers from repeats)")
    d.add_argument("--eval-mask", default=None, metavar="NPY",
                   help="(36, 64) bool mask to save as eval_mask.npy")
    d.add_argument("--seed", type=int, default=0, help="seed of the oracle clip choice")
    d.add_argument("--oracle-fraction", type=float, default=0.1,
                   help="share of training clips in the oracle (validation) tier (default 0.1); "
                        "not used when the clip set has validation clips (they are the "
                        "oracle tier)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    n = p.add_argument_group("NWB (pip install 'cortexcast[nwb]')")
    n.add_argument("--nwb", default=None, metavar="F.nwb",
                   help="write the session as one NWB file: imaging frames, ROIs, "
                        "fluorescence and dF/F from the same features, stimulus and clip "
                        "presentations, running and pupil, reconstructions, closed-loop events")
    n.add_argument("--nwb-meta", default=None, metavar="TOML",
                   help="file whose [export.nwb] table holds the session and subject metadata "
                        "(default: --config)")
    n.add_argument("--nwb-link-tiffs", action="store_true",
                   help="link the TwoPhotonSeries to ScanImage's TIFFs (--tiff-folder, or "
                        "[daq.tiff] folder when --config's [daq] source is \"tiff\") instead "
                        "of copying the frames")
    m = p.add_argument_group("movie")
    m.add_argument("--movie", default=None, metavar="F.gif|F.mp4",
                   help="side-by-side stimulus | reconstruction movie of the session, paired "
                        "by stimulus frame (MP4 needs imageio-ffmpeg)")
    m.add_argument("--movie-frames", type=int, default=None, metavar="N",
                   help="at most N stimulus frames")
    m.add_argument("--movie-start", type=float, default=None, metavar="S",
                   help="from S seconds after the first stimulus frame")
    m.add_argument("--movie-stop", type=float, default=None, metavar="S",
                   help="up to S seconds after the first stimulus frame")
    m.add_argument("--movie-fps", type=float, default=None,
                   help="frame rate (default: the stimulus rate)")
    m.add_argument("--movie-scale", type=int, default=6, help="pixel zoom (default 6)")
    p.set_defaults(func=run)
