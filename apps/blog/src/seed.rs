//! `blog seed`: demo users, entries and comments, so that a newcomer has something to look at.
//!
//! Every demo user's password is [`PASSWORD`]. Seeding twice changes nothing: users that
//! exist already are left as they are, with their entries.

use crate::store::{NewUser, Store, StoreError};

/// The password of every demo user.
pub const PASSWORD: &str = "correct horse battery";

/// The demo users: e-mail, first name, last name.
pub const USERS: [(&str, &str, &str); 2] =
    [("ada@example.com", "Ada", "Lovelace"), ("grace@example.com", "Grace", "Hopper")];

/// What [`run`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seeded {
    /// Users created (0 when the demo users existed already).
    pub users: usize,
    /// Which of [`USERS`] were created (and so have [`PASSWORD`]).
    pub created: [bool; USERS.len()],
    /// Entries created.
    pub entries: usize,
    /// Comments created.
    pub comments: usize,
}

/// Creates the demo users, and for each new user their entries, with comments from the other.
pub async fn run(store: &Store) -> anyhow::Result<Seeded> {
    let mut seeded = Seeded::default();
    let hash = crate::password::hash(PASSWORD.to_owned()).await?;
    let mut created = Vec::new();
    for (index, (email, first_name, last_name)) in USERS.into_iter().enumerate() {
        let new = NewUser { email, password_hash: &hash, first_name, last_name };
        match store.create_user(new).await {
            Ok(user) => {
                seeded.users += 1;
                seeded.created[index] = true;
                created.push(user);
            }
            Err(StoreError::EmailTaken) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let [ada, grace] = match created.as_slice() {
        [ada, grace] => [ada.clone(), grace.clone()],
        _ => return Ok(seeded),
    };
    let entries = [
        (&ada, "Notes on the Analytical Engine", "It might act upon other things besides number."),
        (&grace, "The first bug", "A moth, found in relay 70 of panel F."),
    ];
    for (author, title, content) in entries {
        let entry = store.create_entry(author.id, title, content).await?;
        seeded.entries += 1;
        let other = if author.id == ada.id { &grace } else { &ada };
        for body in ["Wonderful, thank you for writing this.", "Could you say more?"] {
            if store.create_comment(entry.id, other.id, body).await?.is_some() {
                seeded.comments += 1;
            }
        }
    }
    Ok(seeded)
}
