"""The provider's side: reference receiver and verifier, EST test service, rig broker, bundle
tool and the demo; ``homecare-provider`` is its command. Never installed on a router.

May import the router's packages (to read what they send) and the simulated home (the demo).
"""
