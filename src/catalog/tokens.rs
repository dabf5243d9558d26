//! Admin API tokens. Only a SHA-256 of each token is stored; the token itself is shown once.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use rusqlite::OptionalExtension;
use sha2::{Digest, Sha256};

use super::{Catalog, CatalogError, now};

/// What a token may do. Ordered from most to least privileged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Organization administrator: everything, in every workspace.
    OrgAdmin,
    /// Workspace administrator: manage pipelines and activities of its workspace.
    WorkspaceAdmin,
    /// Media-backflow analyst: run reports, trigger runs.
    Analyst,
    /// Read-only: status, reports, metrics.
    ReadOnly,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::OrgAdmin,
        Role::WorkspaceAdmin,
        Role::Analyst,
        Role::ReadOnly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::OrgAdmin => "org_admin",
            Role::WorkspaceAdmin => "workspace_admin",
            Role::Analyst => "analyst",
            Role::ReadOnly => "read_only",
        }
    }

    /// Whether this role includes everything `required` may do.
    pub fn allows(self, required: Role) -> bool {
        self <= required
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Role::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown role `{s}`, expected one of {}", names.join(", "))
            })
    }
}

/// A token as stored (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: i64,
    pub role: Role,
    pub workspace: Option<String>,
    pub label: String,
    pub created_at: String,
}

/// A freshly created token: the only moment its secret exists outside the caller.
#[derive(Debug)]
pub struct IssuedToken {
    pub secret: String,
    pub info: TokenInfo,
}

const PREFIX: &str = "bft_";

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Catalog {
    /// Creates a token with a role, optionally scoped to one workspace.
    pub fn create_token(
        &self,
        role: Role,
        workspace: Option<&str>,
        label: &str,
    ) -> Result<IssuedToken, CatalogError> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret = format!("{PREFIX}{}", hex::encode(bytes));
        let created_at = now();
        let conn = self.conn();
        conn.execute(
            "INSERT INTO tokens (hash, role, workspace, label, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            (hash(&secret), role.as_str(), workspace, label, &created_at),
        )?;
        let id = conn.last_insert_rowid();
        drop(conn);
        self.audit(
            "system",
            "token.create",
            &format!("id={id} role={role} label={label}"),
        )?;
        Ok(IssuedToken {
            secret,
            info: TokenInfo {
                id,
                role,
                workspace: workspace.map(str::to_string),
                label: label.into(),
                created_at,
            },
        })
    }

    /// The token a presented secret belongs to, unless unknown or revoked.
    pub fn verify_token(&self, presented: &str) -> Result<Option<TokenInfo>, CatalogError> {
        if !presented.starts_with(PREFIX) || presented.len() > 256 {
            return Ok(None);
        }
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT id, role, workspace, label, created_at FROM tokens
                 WHERE hash = ?1 AND revoked_at IS NULL",
                [hash(presented)],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(id, role, workspace, label, created_at)| {
            let role = role.parse::<Role>().map_err(CatalogError::Corrupt)?;
            Ok(TokenInfo {
                id,
                role,
                workspace,
                label,
                created_at,
            })
        })
        .transpose()
    }

    /// Whether any live token exists (the daemon creates the first admin token when not).
    pub fn has_tokens(&self) -> Result<bool, CatalogError> {
        let n: i64 = self.conn().query_row(
            "SELECT count(*) FROM tokens WHERE revoked_at IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Revokes a token; true if it existed and was live.
    pub fn revoke_token(&self, id: i64) -> Result<bool, CatalogError> {
        let n = self.conn().execute(
            "UPDATE tokens SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
            (now(), id),
        )?;
        if n > 0 {
            self.audit("system", "token.revoke", &format!("id={id}"))?;
        }
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_until_revoked_and_only_its_hash_is_stored() -> Result<(), CatalogError> {
        let catalog = Catalog::open_in_memory()?;
        assert!(!catalog.has_tokens()?);
        let issued = catalog.create_token(Role::Analyst, Some("ws1"), "ci")?;
        assert!(issued.secret.starts_with("bft_"));
        let info = catalog.verify_token(&issued.secret)?;
        assert_eq!(info.as_ref().map(|i| i.role), Some(Role::Analyst));
        assert_eq!(catalog.verify_token("bft_nope")?, None);
        let stored: String = catalog
            .conn()
            .query_row("SELECT hash FROM tokens", [], |r| r.get(0))?;
        assert_ne!(stored, issued.secret);
        assert!(catalog.revoke_token(issued.info.id)?);
        assert_eq!(catalog.verify_token(&issued.secret)?, None);
        Ok(())
    }

    #[test]
    fn roles_are_ordered_by_privilege() {
        assert!(Role::OrgAdmin.allows(Role::ReadOnly));
        assert!(Role::Analyst.allows(Role::Analyst));
        assert!(!Role::ReadOnly.allows(Role::Analyst));
        assert_eq!("analyst".parse::<Role>(), Ok(Role::Analyst));
        assert!(
            "root"
                .parse::<Role>()
                .is_err_and(|e| e.contains("expected one of org_admin"))
        );
    }
}
