# METADATA
# title: Entitlement index
# description: |
#   Every agent's entitlements keyed by agent SPIFFE ID, destination and action type, so a
#   decision reads one small bucket instead of scanning the agent's entitlements. Evaluated
#   once, when the bundle is built (pdp/bundle.py, which ships the result as the data
#   document data.pdp_index.entitlements); a decision never evaluates this rule itself, and
#   pdp.rules.entitlements scans the inventory when a bundle carries no index.
# custom:
#   controls: []
package pdp.index

# METADATA
# title: Entitlements by agent, destination and action type
# description: The entitlement objects of data.inventory, listed once per destination and action type they name.
entitlements[agent][destination][action_type] contains entitlement if {
	some agent, entry in data.inventory.agents
	some entitlement in entry.entitlements
	some destination in entitlement.destinations
	some action_type in entitlement.action_types
}

# METADATA
# title: Fast-path entries
# description: |
#   What pdp.fast.cleared checks that does not depend on the request, worked out once when
#   the bundle is built (pdp/bundle.py ships it as data.pdp_index.fast), keyed by what the
#   request must match exactly: agent SPIFFE ID, destination name, action type (tool.call or
#   data.read, the fast path's), the agent's tenant, a trust domain that tenant trusts, and
#   the destination's type. An entry exists only for an active agent, a destination of its
#   tenant or shared whose declared data class is at most internal, and an entitlement that
#   allows a read there. Each entry holds:
#     patterns: the name patterns of the entitlements that allow a read ("**" when one lists
#       no names);
#     schemes, ports: the destination's, with egress's defaults (https, 443); hosts: the
#       destination's, only when it registers any (else any host);
#     verified: the on_behalf_of.verified values the agent accepts ([true] when it
#       requires_verified_delegation, else [true, false]);
#     purposes: the purposes the agent lists (strings) whose registered actions include the
#       action type, as keys; unbound: the agent's entry has no purposes member, so any
#       purpose (or none) will do;
#     raising_tools, raising_categories: tools (data.inventory.tools) and data categories
#       (data.classification.category_floors) whose data class or floor is above internal,
#       as keys.
fast[agent][destination][action_type][tenant][domain][kind] := entry if { # regal ignore:rule-length
	inventory := data.inventory
	some agent, by_destination in entitlements
	registered := inventory.agents[agent]
	registered.status == "active"
	tenant := registered.tenant
	is_string(tenant)
	some destination, by_type in by_destination
	target := inventory.destinations[destination]
	target.tenant in {tenant, "*"}
	object.get(target, "data_class", "public") in low
	kind := target.type
	is_string(kind)
	some action_type in ["tool.call", "data.read"]
	patterns := [pattern |
		some entitlement in by_type[action_type]
		"read" in object.get(entitlement, "operations", ["read"])
		some pattern in object.get(entitlement, "names", ["**"])
		is_string(pattern)
	]
	count(patterns) > 0
	some domain in object.get(inventory, ["tenants", tenant, "trust_domains"], [])
	is_string(domain)
	entry := object.union(
		{
			"patterns": patterns,
			"schemes": object.get(target, "schemes", ["https"]),
			"ports": object.get(target, "ports", [443]),
			"verified": verified_accepted(registered),
			"unbound": not_bound(registered),
			"purposes": {purpose: true |
				some purpose in object.get(registered, "purposes", [])
				is_string(purpose)
				action_type in object.get(inventory, ["purposes", purpose, "actions"], [])
			},
			"raising_tools": raising_tools,
			"raising_categories": raising_categories,
		},
		# Only when the destination registers hosts (a member that is present but odd
		# matches no host, as in egress).
		{key: hosts | some key, hosts in target; key == "hosts"},
	)
}

# Tools whose data class is above internal (or not a known label), as keys.
raising_tools[name] := true if {
	some name, tool in object.get(data.inventory, "tools", {})
	not object.get(tool, "data_class", "public") in low
}

# Data categories whose floor is above internal (or not a known label), as keys.
raising_categories[category] := true if {
	some category, minimum in data.classification.category_floors
	not minimum in low
}

# METADATA
# description: True when the agent's entry has no purposes member (not purpose-bound).
not_bound(registered) := false if "purposes" in object.keys(registered)

else := true

# The data classes the fast path takes.
low := {"public", "internal"}

# METADATA
# description: |
#   The on_behalf_of.verified values an agent accepts: only true when it is registered with
#   requires_verified_delegation (exactly true), else either.
verified_accepted(registered) := [true] if registered.requires_verified_delegation == true

else := [true, false]
