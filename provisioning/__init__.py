"""Provisioning: identity keys and certificates, enrolment, episode binding, equipment return."""
