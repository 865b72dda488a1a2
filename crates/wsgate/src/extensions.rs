//! Typed values that middleware attaches to a handshake and its connection keeps (the user).

use std::any::{Any, TypeId};
use std::fmt;

/// Typed values, at most one per type, such as the user [`JwtAuth`](crate::JwtAuth)
/// attaches: [`Handshake::extensions`](crate::Handshake::extensions), then the
/// connection's ([`Connection::extension`](crate::Connection::extension)).
///
/// `http::Extensions`' methods, kept in a list rather than a hash map: a connection holds one
/// or two values for as long as it lives, and a list of two is a quarter of the map's size.
/// Two values attached together ([`insert_pair`](Self::insert_pair)) share one allocation.
#[derive(Default)]
pub struct Extensions {
    slots: Vec<Box<dyn Slot>>,
}

impl Extensions {
    /// No values.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attaches `value`, returning the value of its type attached before, if any.
    pub fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) -> Option<T> {
        match self.get_mut::<T>() {
            Some(slot) => Some(std::mem::replace(slot, value)),
            None => {
                self.slots.push(Box::new(One(value)));
                None
            }
        }
    }

    /// Attaches `a` and `b` in one allocation, as [`insert`](Self::insert) does each (a
    /// value of the same type attached before is detached; of two values of one type, `b`
    /// stays). For what a connection keeps as long as it lives, such as the user and its
    /// token's claims: one block of memory per connection rather than two.
    pub fn insert_pair<A, B>(&mut self, a: A, b: B)
    where
        A: Clone + Send + Sync + 'static,
        B: Clone + Send + Sync + 'static,
    {
        self.remove::<A>();
        self.remove::<B>();
        if TypeId::of::<A>() == TypeId::of::<B>() {
            self.insert(b);
        } else {
            self.slots.push(Box::new(Pair(a, b)));
        }
    }

    /// The value of type `T`, if one is attached.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        let id = TypeId::of::<T>();
        self.slots.iter().find_map(|slot| slot.get(id))?.downcast_ref()
    }

    /// The value of type `T`, mutably, if one is attached.
    pub fn get_mut<T: Send + Sync + 'static>(&mut self) -> Option<&mut T> {
        let id = TypeId::of::<T>();
        self.slots.iter_mut().find_map(|slot| slot.get_mut(id))?.downcast_mut()
    }

    /// Detaches the value of type `T` and returns it.
    pub fn remove<T: Send + Sync + 'static>(&mut self) -> Option<T> {
        let id = TypeId::of::<T>();
        let at = self.slots.iter().position(|slot| slot.get(id).is_some())?;
        let (value, rest) = self.slots.swap_remove(at).take(id);
        self.slots.extend(rest);
        value.and_then(|v| v.downcast::<T>().ok()).map(|b| *b)
    }

    /// Detaches every value.
    pub fn clear(&mut self) {
        self.slots.clear();
    }

    /// How many values are attached.
    pub fn len(&self) -> usize {
        self.slots.iter().map(|slot| slot.len()).sum()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The same values, for a connection to keep: the one allocation of a single slot (the
    /// user and claims [`JwtAuth`](crate::JwtAuth) attaches), or a list without spare room.
    pub(crate) fn kept(mut self) -> Kept {
        Kept(match self.slots.len() {
            0 => None,
            1 => self.slots.pop().map(|slot| slot as Box<dyn Lookup>),
            _ => Some(Box::new(Many(self.slots.into_boxed_slice()))),
        })
    }
}

/// A connection's extensions: read only, one pointer (two words) to what they hold.
pub(crate) struct Kept(Option<Box<dyn Lookup>>);

impl Kept {
    /// The value of type `T`, if one is attached.
    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.0.as_ref()?.get(TypeId::of::<T>())?.downcast_ref()
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions").field("len", &self.len()).finish_non_exhaustive()
    }
}

/// Values found by type.
trait Lookup: Send + Sync {
    /// The value of type `id`, if held.
    fn get(&self, id: TypeId) -> Option<&dyn Any>;
}

/// What [`Slot::take`] gives: the value taken out, if held, and the values left, if any.
type Taken = (Option<Box<dyn Any>>, Option<Box<dyn Slot>>);

/// One allocation of [`Extensions`]: one value, or two attached together.
trait Slot: Lookup {
    /// The value of type `id`, mutably, if held.
    fn get_mut(&mut self, id: TypeId) -> Option<&mut dyn Any>;
    /// The value of type `id` taken out, if held, and the values left, if any.
    fn take(self: Box<Self>, id: TypeId) -> Taken;
    /// A copy, as `http::Extensions` requires its values to be cloned.
    fn clone_box(&self) -> Box<dyn Slot>;
    /// How many values it holds.
    fn len(&self) -> usize;
}

#[derive(Clone)]
struct One<T>(T);

#[derive(Clone)]
struct Pair<A, B>(A, B);

/// Several slots (a connection's, when it keeps more than one).
struct Many(Box<[Box<dyn Slot>]>);

/// `value` as `dyn Any` if its type is `id`.
fn typed<T: Any>(value: &T, id: TypeId) -> Option<&dyn Any> {
    (TypeId::of::<T>() == id).then_some(value as &dyn Any)
}

fn typed_mut<T: Any>(value: &mut T, id: TypeId) -> Option<&mut dyn Any> {
    (TypeId::of::<T>() == id).then_some(value as &mut dyn Any)
}

impl<T: Clone + Send + Sync + 'static> Lookup for One<T> {
    fn get(&self, id: TypeId) -> Option<&dyn Any> {
        typed(&self.0, id)
    }
}

impl<T: Clone + Send + Sync + 'static> Slot for One<T> {
    fn get_mut(&mut self, id: TypeId) -> Option<&mut dyn Any> {
        typed_mut(&mut self.0, id)
    }

    fn take(self: Box<Self>, id: TypeId) -> Taken {
        if TypeId::of::<T>() == id { (Some(Box::new(self.0)), None) } else { (None, Some(self)) }
    }

    fn clone_box(&self) -> Box<dyn Slot> {
        Box::new(self.clone())
    }

    fn len(&self) -> usize {
        1
    }
}

impl<A, B> Lookup for Pair<A, B>
where
    A: Clone + Send + Sync + 'static,
    B: Clone + Send + Sync + 'static,
{
    fn get(&self, id: TypeId) -> Option<&dyn Any> {
        typed(&self.0, id).or_else(|| typed(&self.1, id))
    }
}

impl<A, B> Slot for Pair<A, B>
where
    A: Clone + Send + Sync + 'static,
    B: Clone + Send + Sync + 'static,
{
    fn get_mut(&mut self, id: TypeId) -> Option<&mut dyn Any> {
        let Pair(a, b) = self;
        typed_mut(a, id).or_else(|| typed_mut(b, id))
    }

    fn take(self: Box<Self>, id: TypeId) -> Taken {
        let Pair(a, b) = *self;
        if TypeId::of::<A>() == id {
            (Some(Box::new(a)), Some(Box::new(One(b))))
        } else if TypeId::of::<B>() == id {
            (Some(Box::new(b)), Some(Box::new(One(a))))
        } else {
            (None, Some(Box::new(Pair(a, b))))
        }
    }

    fn clone_box(&self) -> Box<dyn Slot> {
        Box::new(self.clone())
    }

    fn len(&self) -> usize {
        2
    }
}

impl Lookup for Many {
    fn get(&self, id: TypeId) -> Option<&dyn Any> {
        self.0.iter().find_map(|slot| slot.get(id))
    }
}

impl Clone for Extensions {
    fn clone(&self) -> Self {
        Self { slots: self.slots.iter().map(|slot| slot.clone_box()).collect() }
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

    #[test]
    fn a_pair_is_two_values_in_one_slot() {
        let mut ext = Extensions::new();
        ext.insert(User(1));
        ext.insert_pair(User(2), String::from("claims"));
        assert_eq!(ext.len(), 2);
        assert_eq!(ext.slots.len(), 1, "the pair replaced the User attached before");
        assert_eq!(ext.get::<User>(), Some(&User(2)));
        assert_eq!(ext.insert(User(3)), Some(User(2)), "replaced inside the pair");
        ext.get_mut::<String>().unwrap().push('!');
        let kept = ext.clone().kept();
        assert_eq!(kept.get::<User>(), Some(&User(3)));
        assert_eq!(kept.get::<String>().map(String::as_str), Some("claims!"));
        assert_eq!(kept.get::<u8>(), None);
        assert_eq!(ext.remove::<User>(), Some(User(3)));
        assert_eq!(ext.remove::<User>(), None);
        assert_eq!(ext.get::<String>().map(String::as_str), Some("claims!"));
        assert_eq!(ext.len(), 1);
        ext.insert(7u8);
        let kept = ext.kept();
        assert_eq!(kept.get::<u8>(), Some(&7));
        assert_eq!(kept.get::<String>().map(String::as_str), Some("claims!"));
        assert_eq!(Extensions::new().kept().get::<u8>(), None);
    }

    #[test]
    fn a_pair_of_one_type_keeps_the_second() {
        let mut ext = Extensions::new();
        ext.insert_pair(User(1), User(2));
        assert_eq!(ext.len(), 1);
        assert_eq!(ext.get::<User>(), Some(&User(2)));
    }
}
