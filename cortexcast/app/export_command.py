"""``cortexcast export``: a recorded session -> a training dataset, features as live.

``cortexcast export --recording F.ccr --rois rois.npz --out DIR`` (frames from the
recording) or ``... --tiff-folder TIFS`` (frames from ScanImage's files, the recording holding
sync and stimulus). The features come from the ``[decoder]`` table of ``--config`` (the file
the live decoder runs with; flags override single settings), so train-time and live features
are the same computation (:mod:`cortexcast.decoder.offline.export`).
"""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    from cortexcast.core.config import load_settings
    from cortexcast.core.runtime import setup_logging
    from cortexcast.decoder.live.process import DecoderSettings
    from cortexcast.decoder.offline.export import ExportSettings, export_session

    setup_logging("export", getattr(args, "log_level", "INFO"))
    if not args.out:
        print("cortexcast export: error: give an output: --out DIR (a dataset in the "
              "Sensorium 2023 layout)", file=sys.stderr)
        return 2
    try:
        decoder = load_settings(DecoderSettings, args.config, "decoder", {
            "rois": args.rois, "rois_format": args.rois_format,
            "frame_rate_hz": args.frame_rate_hz, "activity": args.activity,
            "motion": {"enabled": args.motion, "reference": args.motion_reference}})
        settings = ExportSettings(
            recording=args.recording, out=args.out, tiff_folder=args.tiff_folder or "",
            first_frame=args.first_frame, tiff_stem=args.tiff_stem,
            tiff_channel=args.tiff_channel, clips=args.clips or "",
            eval_mask=args.eval_mask or "", seed=args.seed,
            oracle_fraction=args.oracle_fraction, force=args.force,
            allow_partial=args.allow_partial, progress=not args.no_progress)
    except ValueError as exc:  # ConfigError included: bad settings, said once
        print(f"cortexcast export: error: {exc}", file=sys.stderr)
        return 2
    export_session(settings, decoder)
    return 0


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
    p.add_argument("--force", action="store_true", help="replace a dataset already in --out")
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
                   help="share of training clips in the oracle (validation) tier (default 0.1)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
