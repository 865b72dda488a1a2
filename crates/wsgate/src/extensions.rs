//! Typed values that middleware attaches to a handshake and its connection keeps (the user).

use std::any::{Any, TypeId};
use std::fmt;

/// Typed values, at most one per type, such as the user [`JwtAuth`](crate::JwtAuth)
/// attaches: [`Handshake::extensions`](crate::Handshake::extensions), then the
/// connection's ([`Connection::extension`](crate::Connection::extension)).
///
/// `http::Extensions`' methods, kept in a list rather than a hash map: a connection holds one
/// or two values for as long as it lives, and a list of two is a quarter of the map's size.
#[derive(Default)]
pub struct Extensions {
    entries: Vec<(TypeId, Box<dyn AnyClone>)>,
}

impl Extensions {
    /// No values.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attaches `value`, returning the value of its type attached before, if any.
    pub fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) -> Option<T> {
        let id = TypeId::of::<T>();
        match self.entries.iter_mut().find(|(t, _)| *t == id) {
            Some((_, slot)) => {
                let old = std::mem::replace(slot, Box::new(value));
                old.into_any().downcast::<T>().ok().map(|b| *b)
            }
            None => {
                self.entries.push((id, Box::new(value)));
                None
            }
        }
    }

    /// The value of type `T`, if one is attached.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        let id = TypeId::of::<T>();
        let (_, value) = self.entries.iter().find(|(t, _)| *t == id)?;
        (**value).as_any().downcast_ref()
    }

    /// The value of type `T`, mutably, if one is attached.
    pub fn get_mut<T: Send + Sync + 'static>(&mut self) -> Option<&mut T> {
        let id = TypeId::of::<T>();
        let (_, value) = self.entries.iter_mut().find(|(t, _)| *t == id)?;
        (**value).as_any_mut().downcast_mut()
    }

    /// Detaches the value of type `T` and returns it.
    pub fn remove<T: Send + Sync + 'static>(&mut self) -> Option<T> {
        let id = TypeId::of::<T>();
        let at = self.entries.iter().position(|(t, _)| *t == id)?;
        let (_, value) = self.entries.swap_remove(at);
        value.into_any().downcast::<T>().ok().map(|b| *b)
    }

    /// Detaches every value.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// How many values are attached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The same values in a list without spare room, for a connection to keep.
    pub(crate) fn kept(mut self) -> Kept {
        // Moved to an allocation of the exact size rather than shrunk in place: mimalloc keeps
        // a block that shrinks to half its size or more as it is (128 B for two values).
        // Without their type ids, which each value's own `Any` gives: 16 B per value fewer.
        let entries: Vec<_> = self.entries.drain(..).map(|(_, value)| value).collect();
        Kept(entries.into_boxed_slice())
    }
}

/// A connection's extensions: read only, in a list without spare room (two words inline), each
/// value's type read from the value (a connection has two or three: the user, the claims).
pub(crate) struct Kept(Box<[Box<dyn AnyClone>]>);

impl Kept {
    /// The value of type `T`, if one is attached.
    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.0.iter().find_map(|value| (**value).as_any().downcast_ref())
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions").field("len", &self.len()).finish_non_exhaustive()
    }
}

/// A value that can be cloned behind `dyn`, as `http::Extensions` requires of its values.
trait AnyClone: Any + Send + Sync {
    fn clone_box(&self) -> Box<dyn AnyClone>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

impl<T: Clone + Send + Sync + 'static> AnyClone for T {
    fn clone_box(&self) -> Box<dyn AnyClone> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

// Not `Clone for Box<dyn AnyClone>`: the box would be an `AnyClone` itself, and a method
// called on it would answer for the box rather than for the value inside.
impl Clone for Extensions {
    fn clone(&self) -> Self {
        let entries = self.entries.iter().map(|(t, v)| (*t, (**v).clone_box())).collect();
        Self { entries }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct User(u32);

    #[test]
    fn one_value_per_type() {
        let mut ext = Extensions::new();
        assert!(ext.is_empty());
        assert_eq!(ext.insert(User(1)), None);
        assert_eq!(ext.insert(String::from("claims")), None);
        assert_eq!(ext.insert(User(2)), Some(User(1)));
        assert_eq!(ext.len(), 2);
        assert_eq!(ext.get::<User>(), Some(&User(2)));
        ext.get_mut::<User>().unwrap().0 = 3;
        let kept = ext.clone().kept();
        assert_eq!(kept.get::<User>(), Some(&User(3)));
        assert_eq!(kept.get::<String>().map(String::as_str), Some("claims"));
        assert_eq!(kept.get::<u8>(), None);
        assert_eq!(ext.remove::<User>(), Some(User(3)));
        assert_eq!(ext.get::<User>(), None);
        ext.clear();
        assert!(ext.is_empty());
    }
}
