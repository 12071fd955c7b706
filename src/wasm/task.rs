//! Async work that JS steps, and what happens on a panic.
//!
//! A [`Task`] holds a stream of results (a one-shot future is a stream of one). JS calls
//! [`Task::step`] with a `watch` function; the step polls once and returns. A JS promise the
//! task awaits ([`settled`]) is handed to `watch`, which records its outcome on a plain object
//! and calls JS back to step again: JS promise callbacks only wake, never poll, so every poll
//! happens inside a `step` the wrapper called and can catch a fault from.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures_util::stream::{LocalBoxStream, Stream, StreamExt as _};
use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use super::{coded, invalid, outcome};
use crate::error::ErrorCode;

/// Runs when an instance starts (also each fresh one after a fault): a panic then throws a
/// coded `INTERNAL` error carrying its message out of wasm, instead of trapping, and has
/// wasm-bindgen make a fresh instance before the next call, since this one stopped halfway
/// through whatever it was doing.
#[wasm_bindgen(start)]
fn start() {
    std::panic::set_hook(Box::new(|info| {
        wasm_bindgen::handler::schedule_reinit();
        wasm_bindgen::throw_val(coded(
            ErrorCode::Internal,
            &format!("internal error: {info}"),
        ));
    }));
}

/// Has the glue make a fresh instance before the next call: what the wrapper calls after a
/// fault that did not go through the panic hook (a trap).
#[wasm_bindgen(js_name = __scheduleReinit)]
pub fn schedule_reinit() {
    wasm_bindgen::handler::schedule_reinit();
}

/// Where the test hook can make the next panic happen.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum PanicPoint {
    /// The next poll of a running rebuild.
    Rebuild,
    /// The next `encode`.
    Encode,
}

thread_local! {
    static ARMED: Cell<Option<PanicPoint>> = const { Cell::new(None) };
}

/// Panics if the test hook armed a panic here.
pub(super) fn panic_point(point: PanicPoint) {
    if ARMED.get() == Some(point) {
        ARMED.set(None);
        panic!("zipllm test hook: a panic on purpose ({point:?})");
    }
}

/// Test hook (undocumented): `"now"` panics at once, `"abort"` traps without the panic hook,
/// `"rebuild"` and `"encode"` make the next rebuild poll or encode panic.
#[wasm_bindgen(js_name = __testPanic)]
pub fn test_panic(at: JsValue) -> JsValue {
    let point = match at.as_string().as_deref() {
        Some("now") => panic!("zipllm test hook: a panic on purpose (now)"),
        Some("abort") => std::process::abort(),
        Some("rebuild") => PanicPoint::Rebuild,
        Some("encode") => PanicPoint::Encode,
        _ => {
            return outcome(Err(invalid(
                "__testPanic takes \"now\", \"abort\", \"rebuild\" or \"encode\"",
            )))
        }
    };
    ARMED.set(Some(point));
    outcome(Ok(JsValue::UNDEFINED))
}

/// The promises a task waits on, each with the waker of the future that awaits it.
#[derive(Default)]
struct Waiting {
    /// `watch(promise)` from the current step: returns the object the outcome will be set on.
    watch: RefCell<Option<Function>>,
    slots: RefCell<Vec<(Object, Rc<RefCell<Waker>>)>>,
}

impl Waiting {
    /// Wakes the futures whose promise has settled since the last step.
    fn wake_settled(&self) {
        let mut woken = Vec::new();
        self.slots.borrow_mut().retain(|(slot, waker)| {
            let done = is_settled(slot);
            if done {
                woken.push(waker.clone());
            }
            !done
        });
        for w in woken {
            w.borrow().wake_by_ref();
        }
    }
}

thread_local! {
    /// The task being stepped, where a promise polled now is registered.
    static CURRENT: RefCell<Option<Rc<Waiting>>> = const { RefCell::new(None) };
}

/// Async work JS drives (see the module docs).
#[wasm_bindgen]
pub struct Task {
    stream: Option<LocalBoxStream<'static, Result<JsValue, JsValue>>>,
    waiting: Rc<Waiting>,
}

impl Task {
    pub(super) fn once(f: impl Future<Output = Result<JsValue, JsValue>> + 'static) -> Task {
        Task::stream(futures_util::stream::once(f))
    }

    /// A stream of results; it ends at its first error.
    pub(super) fn stream(s: impl Stream<Item = Result<JsValue, JsValue>> + 'static) -> Task {
        Task {
            stream: Some(s.boxed_local()),
            waiting: Rc::default(),
        }
    }
}

#[wasm_bindgen]
impl Task {
    /// Polls once. `watch(promise)` (the same function at every step) must return an object on
    /// which it will set `value` or `error` when the promise settles, and then have JS step the
    /// task again. Returns `undefined` while the task waits, else `{ value }`, `{ error }` or
    /// `{ done: true }` once the stream has ended.
    pub fn step(&mut self, watch: Function) -> JsValue {
        let Some(stream) = self.stream.as_mut() else {
            return done();
        };
        *self.waiting.watch.borrow_mut() = Some(watch);
        self.waiting.wake_settled();
        let outer = CURRENT.replace(Some(self.waiting.clone()));
        let polled = stream
            .as_mut()
            .poll_next(&mut Context::from_waker(Waker::noop()));
        CURRENT.set(outer);
        match polled {
            Poll::Pending => JsValue::UNDEFINED,
            Poll::Ready(Some(Ok(v))) => outcome(Ok(v)),
            Poll::Ready(Some(Err(e))) => {
                self.stream = None;
                outcome(Err(e))
            }
            Poll::Ready(None) => {
                self.stream = None;
                done()
            }
        }
    }
}

fn done() -> JsValue {
    let done = Object::new();
    let _ = Reflect::set(&done, &"done".into(), &true.into());
    done.into()
}

fn is_settled(slot: &Object) -> bool {
    ["value", "error"]
        .iter()
        .any(|k| Reflect::has(slot, &(*k).into()).unwrap_or(false))
}

/// A JS promise as a future, for a task to await.
pub(super) struct Settled {
    promise: Option<Promise>,
    slot: Option<Object>,
    waker: Rc<RefCell<Waker>>,
}

pub(super) fn settled(promise: Promise) -> Settled {
    Settled {
        promise: Some(promise),
        slot: None,
        waker: Rc::new(RefCell::new(Waker::noop().clone())),
    }
}

/// Awaits a value if it is a promise.
pub(super) async fn resolve(v: JsValue) -> Result<JsValue, JsValue> {
    match v.dyn_into::<Promise>() {
        Ok(p) => settled(p).await,
        Err(v) => Ok(v),
    }
}

impl Future for Settled {
    type Output = Result<JsValue, JsValue>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        this.waker.borrow_mut().clone_from(cx.waker());
        if let Some(promise) = this.promise.take() {
            let Some(waiting) = CURRENT.with_borrow(Clone::clone) else {
                return Poll::Ready(Err(coded(
                    ErrorCode::Internal,
                    "internal error: a promise was awaited outside a task",
                )));
            };
            let watch = waiting.watch.borrow().clone();
            let slot = match watch.map(|w| w.call1(&JsValue::NULL, &promise)) {
                Some(Ok(slot)) if slot.is_object() => slot.unchecked_into::<Object>(),
                Some(Err(e)) => return Poll::Ready(Err(e)),
                _ => {
                    return Poll::Ready(Err(coded(
                        ErrorCode::Internal,
                        "internal error: watch(promise) must return an object",
                    )))
                }
            };
            waiting
                .slots
                .borrow_mut()
                .push((slot.clone(), this.waker.clone()));
            this.slot = Some(slot);
            return Poll::Pending;
        }
        let Some(slot) = &this.slot else {
            return Poll::Pending;
        };
        for (key, ok) in [("value", true), ("error", false)] {
            if Reflect::has(slot, &key.into()).unwrap_or(false) {
                let v = Reflect::get(slot, &key.into()).unwrap_or_default();
                return Poll::Ready(if ok { Ok(v) } else { Err(v) });
            }
        }
        Poll::Pending
    }
}
