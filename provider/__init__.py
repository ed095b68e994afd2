"""The provider side of the link: the broker and verifier the simulated rig and the demo run."""
