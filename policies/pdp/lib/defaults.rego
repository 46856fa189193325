package pdp.lib

# METADATA
# title: Environment ranks
# description: |
#   Deployment environments in rising order of what is at stake. An environment label that
#   is not one of these ranks as prod: an unknown environment is treated as the most
#   restrictive one.
environment_ranks := {"dev": 0, "staging": 1, "prod": 2}

# METADATA
# title: Environment labels
# description: The labels of environment_ranks, indexed by rank.
environment_labels := ["dev", "staging", "prod"]

# METADATA
# description: The rank of an environment label; prod's for a label that is not known.
environment_rank(label) := object.get(environment_ranks, label, 2)

# METADATA
# description: The rank of a sensitivity label; restricted's for a label that is not known.
sensitivity_rank(label) := object.get(sensitivity_ranks, label, 3)

# METADATA
# title: Sensitivity labels
# description: The labels of sensitivity_ranks, indexed by rank.
sensitivity_labels := ["public", "internal", "confidential", "restricted"]

# METADATA
# title: Action and tool name
# description: |
#   The documented character set of action and tool names: ASCII letters, digits, "_", "-"
#   and "." (the namespace separator globs use), starting with a letter or digit, at most
#   128 characters. No ":" (the scope separator), no whitespace, control, zero-width or
#   bidirectional characters, so a name reads one way and the credential scope
#   <type>:<name>:<operation> built from it is canonical.
valid_name(name) if {
	is_string(name)
	regex.match(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`, name)
}

# METADATA
# title: Delegated subject
# description: |
#   The documented form of agent.on_behalf_of.subject: "user:" followed by an e-mail
#   address or a user id, or "service:" followed by a service name, in ASCII letters,
#   digits and "._%+-" (and one "@" for an address); at most 256 characters.
valid_subject(subject) if {
	is_string(subject)
	count(subject) <= 256
	regex.match(`^(user:[A-Za-z0-9._%+-]+(@[A-Za-z0-9.-]+)?|service:[A-Za-z0-9._-]+)$`, subject)
}
