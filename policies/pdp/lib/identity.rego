package pdp.lib

# METADATA
# title: Authenticated identity
# description: |
#   True when the PDP verified the agent's JWT-SVID. Requires a SPIFFE ID as well as the
#   flag, so a half-filled identity never counts as authenticated.
authenticated(identity) if {
	identity.authenticated == true
	is_string(identity.spiffe_id)
}

# METADATA
# title: Sensitivity ranks
# description: Data sensitivity labels in rising order; input.data.sensitivity_rank uses the same ranks.
sensitivity_ranks := {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}
