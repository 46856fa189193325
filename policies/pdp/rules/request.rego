# METADATA
# title: Request form
# description: |
#   Refuses requests whose facts the other modules could read two ways. The action's name
#   and operation are required, and the name is in the documented character set
#   (lib.valid_name), so the credential scope <type>:<name>:<operation> is canonical and an
#   entitlement glob sees what the target will see. The destination's type must be the one
#   the inventory registers, so a request cannot call a tool a model (or the reverse) to
#   change how it is judged or what the credential says.
# custom:
#   controls:
#     - OWASP-ASI02
#     - OWASP-ASI03
#     - MAESTRO
#     - NIST-AI-RMF:MEASURE-2.7
package pdp.rules.request

import data.pdp.facts
import data.pdp.lib

# METADATA
# title: Action name missing or not canonical
# description: |
#   The action has no name, or its name is outside the documented character set: letters,
#   digits, "_", "-" and "." (no ":", whitespace, control, zero-width or bidi characters).
# custom:
#   code: action_name_invalid
deny contains lib.reason(rego.metadata.chain(), message) if {
	name := object.get(input.action, "name", null)
	not lib.valid_name(name)
	message := sprintf("action name %v is missing or not in the documented character set [A-Za-z0-9_.-]", [name])
}

# METADATA
# title: Action operation missing
# description: The action does not say its operation (read, write, delete or execute).
# custom:
#   code: action_operation_required
deny contains lib.reason(rego.metadata.chain(), message) if {
	operation := object.get(input.action, "operation", null)
	not operation in {"read", "write", "delete", "execute"}
	message := sprintf("action operation %v is not one of read, write, delete, execute", [operation])
}

# METADATA
# title: Destination type differs from the inventory
# description: The request's destination.type is not the type the inventory registers for the destination.
# custom:
#   code: destination_type_mismatch
deny contains lib.reason(rego.metadata.chain(), message) if {
	registered := facts.destination.type
	input.destination.type != registered
	message := sprintf(
		"destination %q is registered as %q, not %q",
		[input.destination.name, registered, input.destination.type],
	)
}
