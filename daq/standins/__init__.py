"""Runnable stand-ins for rig hardware: ``python -m cortexcast.daq.standins.<name>``.

Each one produces exactly what the real device produces (same bytes on the wire,
same files on disk) from a cortexcast recording or the simulated rig, so the
stack can run, be developed and be tested without the hardware.
"""
