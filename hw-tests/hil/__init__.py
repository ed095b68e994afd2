"""Hardware-in-the-loop support: rig profiles, rig adapters (simulated / real), checks, report."""
