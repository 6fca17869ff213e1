//! `spec.mapping`: Segment's mapping-kit. A mapping is validated once when the destination is
//! loaded (every error listed with its path) and then resolved against each event.

mod fields;
mod plan;
mod resolve;
mod template;
mod validate;

use serde_json::{Value, json};

pub use template::LiquidTemplates;

/// Every problem found in a mapping, each message starting with its JSON-pointer-like path.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{}", .0.join("; "))]
pub struct MappingInvalid(pub Vec<String>);

/// A failure while resolving a valid mapping against one event (e.g. `@json` decoding bad JSON).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("mapping: {0}")]
pub struct MappingError(pub String);

#[derive(Debug, Clone)]
pub struct Mapping {
    spec: Value,
    liquid: LiquidTemplates,
    /// What writes the payloads.
    plan: plan::Plan,
}

impl Mapping {
    /// Validates `spec` the way mapping-kit does; `None` is the whole event (`{"@path": "$."}`).
    pub fn compile(spec: Option<&Value>) -> Result<Self, MappingInvalid> {
        let spec = spec.cloned().unwrap_or_else(|| json!({"@path": "$."}));
        let mut errors = validate::validate(&spec);
        let liquid = LiquidTemplates::compile(&spec, &mut errors);
        if errors.is_empty() {
            let plan = plan::Plan::compile(&spec);
            Ok(Mapping { spec, liquid, plan })
        } else {
            Err(MappingInvalid(errors))
        }
    }

    /// The paths into an event (keys from the event down) the mapping can read; `None`:
    /// anything.
    pub fn read_paths(&self) -> Option<Vec<Vec<String>>> {
        fields::read_paths(&self.spec)
    }

    /// The payload for one event; keys that resolve to nothing are left out.
    pub fn apply(&self, event: &Value) -> Result<Value, MappingError> {
        let resolved = self.resolver_for(event)?.resolve(&self.spec, event)?;
        Ok(resolved.unwrap_or(Value::Null))
    }

    /// [`apply`](Self::apply)'s payload as a request body (`JSON.stringify`), written into
    /// `out` as it is resolved.
    pub fn write(&self, event: &Value, out: &mut Vec<u8>) -> Result<(), MappingError> {
        if !self.plan.write(&self.resolver_for(event)?, event, out)? {
            out.extend_from_slice(b"null");
        }
        Ok(())
    }

    /// A resolver for `event`, which must be an object (mapping-kit's own check).
    fn resolver_for(&self, event: &Value) -> Result<resolve::Resolver<'_>, MappingError> {
        if !event.is_object() {
            return Err(MappingError(format!(
                "data must be an object, got {}",
                super::jsvalue::type_name(Some(event))
            )));
        }
        Ok(resolve::Resolver {
            liquid: &self.liquid,
        })
    }
}
