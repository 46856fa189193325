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
