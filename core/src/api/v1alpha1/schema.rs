//! Hand-written schemas for the Kubernetes types our CRDs embed.
//!
//! k8s-openapi's own schemas carry no bounds (no `maxLength`, no `maxItems`), and a CRD must bound
//! every string and list; these give the same shapes with the bounds the upstream Go types declare.

use schemars::{Schema, SchemaGenerator, json_schema};

use super::limits::{MAX_CONDITIONS, MAX_RESOURCE_NAMES};

/// A `metav1.Time`: an RFC 3339 timestamp.
pub(crate) fn time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "format": "date-time" })
}

/// A map from resource name (`cpu`, `memory`) to a Kubernetes quantity (`500m`, `1Gi`).
pub(crate) fn quantities(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": MAX_RESOURCE_NAMES,
        "additionalProperties": {
            "anyOf": [
                { "type": "integer" },
                { "type": "string", "maxLength": 64 }
            ],
            "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
            "x-kubernetes-int-or-string": true
        }
    })
}

/// A list of `metav1.Condition`, keyed by type, with the bounds of the upstream Go type.
pub(crate) fn conditions(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": MAX_CONDITIONS,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "description": "One aspect of the object's current state, in the standard Kubernetes form.",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "type": {
                    "type": "string",
                    "maxLength": 316,
                    "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
                    "description": "Type of the condition, in CamelCase (e.g. Ready, Succeeded)."
                },
                "status": {
                    "type": "string",
                    "enum": ["True", "False", "Unknown"],
                    "description": "Status of the condition: True, False or Unknown."
                },
                "reason": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 1024,
                    "pattern": r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                    "description": "Machine-readable CamelCase reason for the last transition."
                },
                "message": {
                    "type": "string",
                    "maxLength": 32768,
                    "description": "Human-readable details of the last transition; short and fixed in form."
                },
                "lastTransitionTime": {
                    "type": "string",
                    "format": "date-time",
                    "description": "When the condition last changed status."
                },
                "observedGeneration": {
                    "type": "integer",
                    "format": "int64",
                    "minimum": 0,
                    "description": "The metadata.generation the condition was set from."
                }
            }
        }
    })
}
