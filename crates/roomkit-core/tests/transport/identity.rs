//! Identity resolution in the inbound pipeline (RFC §11, T-15..T-25) and
//! the B.3 conversation through the library.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use roomkit_core::model::{
    ChannelId, ChannelType, DeliveryStatus, EventStatus, EventType, FrameworkEvent, HookTrigger,
    IdentificationStatus, Identity, IdentityId, InboundMessage, Map, RoomId,
};
use roomkit_core::{
    AttachOptions, CreateRoom, DeliveryStatusUpdate, HookRegistration, IdentityError,
    IdentityHookResult, IdentityResolver, IdentityResult, InjectedEvent, RoomContext, RoomKit,
    SideEffects, TimelineQuery,
};
use roomkit_testkit::{FrameworkLog, RecordingChannel};

const PHONE: &str = "+15551234567";

fn person(id: &str, name: &str, phone: Option<&str>, email: Option<&str>) -> Identity {
    let mut addresses = BTreeMap::new();
    if let Some(p) = phone {
        addresses.insert(ChannelType::Sms, vec![p.to_owned()]);
    }
    if let Some(e) = email {
        addresses.insert(ChannelType::Email, vec![e.to_owned()]);
    }
    Identity {
        id: IdentityId::from(id),
        organization_id: None,
        display_name: Some(name.into()),
        channel_addresses: addresses,
        external_id: None,
        metadata: Map::new(),
    }
}

/// A resolver that answers from a closure and counts its calls.
struct Scripted {
    calls: AtomicUsize,
    answer: Box<dyn Fn(&InboundMessage) -> IdentityResult + Send + Sync>,
    sleep: Option<Duration>,
}

#[async_trait]
impl IdentityResolver for Scripted {
    async fn resolve(
        &self,
        message: &InboundMessage,
        _context: &RoomContext,
    ) -> Result<IdentityResult, IdentityError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(d) = self.sleep {
            tokio::time::sleep(d).await;
        }
        Ok((self.answer)(message))
    }
}

fn scripted(
    answer: impl Fn(&InboundMessage) -> IdentityResult + Send + Sync + 'static,
) -> Arc<Scripted> {
    Arc::new(Scripted {
        calls: AtomicUsize::new(0),
        answer: Box::new(answer),
        sleep: None,
    })
}

struct Setup {
    kit: RoomKit,
    sms: RecordingChannel,
    ws: RecordingChannel,
    room: RoomId,
}

async fn setup(
    resolver: Arc<Scripted>,
    extra: impl FnOnce(roomkit_core::RoomKitBuilder) -> roomkit_core::RoomKitBuilder,
) -> Setup {
    let sms = RecordingChannel::sms("sms");
    let email = RecordingChannel::transport("email", ChannelType::Email);
    let ws = RecordingChannel::websocket("ws");
    let ai = RecordingChannel::ai("ai");
    ai.respond_with(|e, _| {
        if e.source.channel_id.as_str() == "sms" || e.source.channel_id.as_str() == "email" {
            roomkit_core::ChannelOutput::respond(roomkit_testkit::reply("How can I help?"))
        } else {
            roomkit_core::ChannelOutput::empty()
        }
    });
    let builder = RoomKit::builder()
        .channel(sms.arc())
        .channel(email.arc())
        .channel(ws.arc())
        .channel(ai.arc())
        .identity_resolver(resolver);
    let kit = extra(builder).build().unwrap();
    let room = kit.create_room(CreateRoom::with_id("r")).await.unwrap();
    for c in ["sms", "email", "ws", "ai"] {
        kit.attach_channel(&room.id, &ChannelId::from(c), AttachOptions::default())
            .await
            .unwrap();
    }
    Setup {
        kit,
        sms,
        ws,
        room: room.id,
    }
}

fn inbound(channel: &str, from: &str, text: &str, room: &RoomId) -> InboundMessage {
    InboundMessage::text(channel, from, text).in_room(room.clone())
}

fn counter(kit: &RoomKit, trigger: HookTrigger) -> Arc<AtomicUsize> {
    let n = Arc::new(AtomicUsize::new(0));
    let c = n.clone();
    kit.add_hook(HookRegistration::asynchronous(
        trigger,
        format!("count-{trigger}"),
        move |_| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok(SideEffects::default())
            }
        },
    ));
    n
}

/// B.3 (through the library), T-17 pending, T-23 case 2, T-25, T-32.
#[tokio::test]
async fn b3_ambiguous_identity_on_a_shared_family_phone() {
    let family = vec![
        person("id_jean", "Jean", Some(PHONE), None),
        person("id_marie", "Marie", Some(PHONE), None),
        person("id_pierre", "Pierre", Some(PHONE), None),
    ];
    let candidates = family.clone();
    let resolver = scripted(move |_| IdentityResult::ambiguous(candidates.clone()));
    let s = setup(resolver.clone(), |b| b).await;
    s.kit
        .store()
        .store_identity(family[1].clone())
        .await
        .unwrap();
    let hook_calls = Arc::new(AtomicUsize::new(0));
    let hc = hook_calls.clone();
    s.kit.add_hook(HookRegistration::identity(
        HookTrigger::OnIdentityAmbiguous,
        "family_phone",
        move |p, _| {
            hc.fetch_add(1, Ordering::SeqCst);
            async move { Ok(IdentityHookResult::pending(p.candidates)) }
        },
    ));
    let identified = counter(&s.kit, HookTrigger::OnParticipantIdentified);
    let log = FrameworkLog::start(&s.kit);

    // Step 1.
    let r = s
        .kit
        .process_inbound(inbound("sms", PHONE, "I need to check my account", &s.room))
        .await
        .unwrap();
    let event = r.event.unwrap();
    assert_eq!(event.status, EventStatus::Delivered);
    let participants = s.kit.list_participants(&s.room).await.unwrap();
    assert_eq!(participants.len(), 1);
    let p = &participants[0];
    assert_eq!(p.identification, IdentificationStatus::Pending);
    let ids: Vec<&str> = p
        .candidates
        .as_ref()
        .unwrap()
        .iter()
        .map(|i| i.as_str())
        .collect();
    assert_eq!(ids, vec!["id_jean", "id_marie", "id_pierre"]);
    assert_eq!(p.display_name.as_deref(), Some(PHONE));
    assert_eq!(event.source.participant_id.as_ref(), Some(&p.id));
    s.kit.idle().await;
    let timeline = s
        .kit
        .timeline(&s.room, TimelineQuery::default())
        .await
        .unwrap();
    let reply = timeline
        .iter()
        .find(|e| e.index == event.index + 1)
        .unwrap();
    assert_eq!(reply.content.plain_text(), "How can I help?");
    assert_eq!(reply.source.channel_id.as_str(), "ai");

    // Step 2.
    let resolved = s
        .kit
        .resolve_participant(&s.room, &p.id, &IdentityId::from("id_marie"))
        .await
        .unwrap();
    assert_eq!(resolved.identification, IdentificationStatus::Identified);
    assert_eq!(resolved.identity_id.as_ref().unwrap().as_str(), "id_marie");
    s.kit.idle().await;
    let timeline = s
        .kit
        .timeline(&s.room, TimelineQuery::default())
        .await
        .unwrap();
    assert_eq!(
        timeline.last().unwrap().event_type,
        EventType::ParticipantIdentified
    );
    assert_eq!(identified.load(Ordering::SeqCst), 1);
    assert!(log.names().await.contains(&"identity_resolved"));

    // Step 3: no resolver call, no identity hook.
    let r = s
        .kit
        .process_inbound(inbound("sms", PHONE, "Marie here", &s.room))
        .await
        .unwrap();
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 1);
    assert_eq!(hook_calls.load(Ordering::SeqCst), 1);
    assert_eq!(r.event.unwrap().source.participant_id.as_ref(), Some(&p.id));
    assert_eq!(s.kit.list_participants(&s.room).await.unwrap().len(), 1);
}

/// T-16, T-25, T-27: IDENTIFIED attributes the event to a participant with
/// the identity; the same person by SMS then email is one participant.
#[tokio::test]
async fn t16_identified_sender_across_channels_is_one_participant() {
    let ada = person("id_ada", "Ada", Some(PHONE), Some("ada@example.com"));
    let who = ada.clone();
    let resolver = scripted(move |_| IdentityResult::identified(who.clone()));
    let s = setup(resolver, |b| b).await;
    let identified = counter(&s.kit, HookTrigger::OnParticipantIdentified);
    let log = FrameworkLog::start(&s.kit);

    let r1 = s
        .kit
        .process_inbound(inbound("sms", PHONE, "hi", &s.room))
        .await
        .unwrap();
    let r2 = s
        .kit
        .process_inbound(inbound("email", "ada@example.com", "hello again", &s.room))
        .await
        .unwrap();
    let participants = s.kit.list_participants(&s.room).await.unwrap();
    assert_eq!(participants.len(), 1, "{participants:?}");
    let p = &participants[0];
    assert_eq!(p.identification, IdentificationStatus::Identified);
    assert_eq!(p.identity_id.as_ref().unwrap().as_str(), "id_ada");
    assert_eq!(p.display_name.as_deref(), Some("Ada"));
    assert_eq!(p.resolved_by.as_deref(), Some("auto"));
    let via: Vec<&str> = p.connected_via.iter().map(|c| c.as_str()).collect();
    assert_eq!(via, vec!["sms", "email"]);
    assert_eq!(
        r1.event.unwrap().source.participant_id.as_ref(),
        Some(&p.id)
    );
    assert_eq!(
        r2.event.unwrap().source.participant_id.as_ref(),
        Some(&p.id)
    );
    s.kit.idle().await;
    assert_eq!(identified.load(Ordering::SeqCst), 1);
    let events = log.events().await;
    let resolved: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, FrameworkEvent::IdentityResolved { .. }))
        .collect();
    assert_eq!(resolved.len(), 1);
}

/// T-18, T-19: an UNKNOWN sender challenged: the challenge reaches its
/// target, the message is stored BLOCKED and broadcast to nobody.
#[tokio::test]
async fn t19_challenge_delivers_the_challenge_and_blocks_the_message() {
    let s = setup(scripted(|_| IdentityResult::unknown()), |b| b).await;
    s.kit.add_hook(HookRegistration::identity(
        HookTrigger::OnIdentityUnknown,
        "verify",
        |_, _| async {
            Ok(IdentityHookResult::challenge(vec![InjectedEvent::text(
                "Reply with your date of birth",
                ["sms"],
            )]))
        },
    ));
    let r = s
        .kit
        .process_inbound(inbound("sms", PHONE, "secret stuff", &s.room))
        .await
        .unwrap();
    assert!(r.blocked);
    let e = r.event.unwrap();
    assert_eq!(e.status, EventStatus::Blocked);
    assert_eq!(e.blocked_by.as_deref(), Some("verify"));
    s.kit.idle().await;
    assert_eq!(
        s.sms.delivered_texts(),
        vec!["Reply with your date of birth"]
    );
    assert!(s.ws.delivered_texts().is_empty());
    let p = &s.kit.list_participants(&s.room).await.unwrap()[0];
    assert_eq!(p.identification, IdentificationStatus::ChallengeSent);
    let timeline = s
        .kit
        .timeline(&s.room, TimelineQuery::default())
        .await
        .unwrap();
    let last = timeline.last().unwrap();
    assert_eq!(last.content.plain_text(), "Reply with your date of birth");
    assert_eq!(last.index, e.index + 1);
}

/// T-18, T-19: reject blocks the message; nothing is broadcast.
#[tokio::test]
async fn t19_reject_blocks_the_message() {
    let s = setup(scripted(|_| IdentityResult::unknown()), |b| b).await;
    s.kit.add_hook(HookRegistration::identity(
        HookTrigger::OnIdentityUnknown,
        "strangers_out",
        |_, _| async { Ok(IdentityHookResult::reject("unknown sender")) },
    ));
    let r = s
        .kit
        .process_inbound(inbound("sms", PHONE, "hello", &s.room))
        .await
        .unwrap();
    assert!(r.blocked);
    let e = r.event.unwrap();
    assert_eq!(e.status, EventStatus::Blocked);
    assert_eq!(
        e.metadata.get("block_reason").and_then(|v| v.as_str()),
        Some("unknown sender")
    );
    s.kit.idle().await;
    assert!(s.ws.delivered_texts().is_empty());
    assert!(s.sms.delivered_texts().is_empty());
}

/// T-18: create makes an identity from the address and identifies the
/// participant with it.
#[tokio::test]
async fn t18_create_makes_an_identity_for_an_unknown_sender() {
    let s = setup(scripted(|_| IdentityResult::unknown()), |b| b).await;
    s.kit.add_hook(HookRegistration::identity(
        HookTrigger::OnIdentityUnknown,
        "enrol",
        |_, _| async { Ok(IdentityHookResult::create(None)) },
    ));
    let r = s
        .kit
        .process_inbound(inbound("sms", PHONE, "hello", &s.room))
        .await
        .unwrap();
    assert_eq!(r.event.unwrap().status, EventStatus::Delivered);
    let p = &s.kit.list_participants(&s.room).await.unwrap()[0];
    assert_eq!(p.identification, IdentificationStatus::Identified);
    assert_eq!(p.resolved_by.as_deref(), Some("enrol"));
    let found = s
        .kit
        .store()
        .resolve_by_address(&ChannelType::Sms, PHONE, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(&found.id), p.identity_id.as_ref());
}

/// T-17: resolved(identity) from the ambiguity hook identifies the sender.
#[tokio::test]
async fn t17_ambiguity_hook_can_resolve() {
    let a = person("a", "A", Some(PHONE), None);
    let b = person("b", "B", Some(PHONE), None);
    let cands = vec![a, b];
    let s = setup(
        scripted(move |_| IdentityResult::ambiguous(cands.clone())),
        |b| b,
    )
    .await;
    s.kit.add_hook(HookRegistration::identity(
        HookTrigger::OnIdentityAmbiguous,
        "pick_first",
        |p, _| async move { Ok(IdentityHookResult::resolved(p.candidates[0].clone())) },
    ));
    s.kit
        .process_inbound(inbound("sms", PHONE, "x", &s.room))
        .await
        .unwrap();
    let p = &s.kit.list_participants(&s.room).await.unwrap()[0];
    assert_eq!(p.identification, IdentificationStatus::Identified);
    assert_eq!(p.identity_id.as_ref().unwrap().as_str(), "a");
}

/// T-22: a resolver past its timeout counts as UNKNOWN without hooks,
/// `identity_timeout` is emitted, and the event is still DELIVERED.
#[tokio::test(start_paused = true)]
async fn t22_resolver_timeout_is_unknown_and_processing_goes_on() {
    let resolver = Arc::new(Scripted {
        calls: AtomicUsize::new(0),
        answer: Box::new(|_| IdentityResult::unknown()),
        sleep: Some(Duration::from_secs(60)),
    });
    let s = setup(resolver, |b| b.identity_timeout(Duration::from_secs(5))).await;
    let hook = Arc::new(AtomicUsize::new(0));
    let h = hook.clone();
    s.kit.add_hook(HookRegistration::identity(
        HookTrigger::OnIdentityUnknown,
        "never",
        move |_, _| {
            h.fetch_add(1, Ordering::SeqCst);
            async { Ok(IdentityHookResult::reject("no")) }
        },
    ));
    let log = FrameworkLog::start(&s.kit);
    let r = s
        .kit
        .process_inbound(inbound("sms", PHONE, "hello", &s.room))
        .await
        .unwrap();
    assert_eq!(r.event.unwrap().status, EventStatus::Delivered);
    assert_eq!(hook.load(Ordering::SeqCst), 0);
    let events = log.events().await;
    assert!(events.iter().any(|e| matches!(
        e,
        FrameworkEvent::IdentityTimeout { address, .. } if address == PHONE
    )));
    let p = &s.kit.list_participants(&s.room).await.unwrap()[0];
    assert_eq!(p.identification, IdentificationStatus::Unknown);
}

/// T-21: channel types outside the configured set are not resolved.
#[tokio::test]
async fn t21_channel_type_filter() {
    let resolver = scripted(|_| IdentityResult::unknown());
    let s = setup(resolver.clone(), |b| {
        b.identity_channel_types([ChannelType::Sms])
    })
    .await;
    s.kit
        .process_inbound(inbound("ws", "user-1", "hi", &s.room))
        .await
        .unwrap();
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 0);
    s.kit
        .process_inbound(inbound("sms", PHONE, "hi", &s.room))
        .await
        .unwrap();
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 1);
}

/// T-07 (library half): a delivery-status callback updates the event's
/// delivery result and fires ON_DELIVERY_STATUS.
#[tokio::test]
async fn delivery_status_updates_results_and_fires_the_hook() {
    let s = setup(scripted(|_| IdentityResult::unknown()), |b| b).await;
    let fired = counter(&s.kit, HookTrigger::OnDeliveryStatus);
    let r = s
        .kit
        .send_event(roomkit_core::SendEvent::text(
            s.room.clone(),
            "ws",
            "hi there",
        ))
        .await
        .unwrap();
    let event = r.event.unwrap();
    let pmid = r
        .delivery_results
        .iter()
        .find(|(c, _)| c.as_str() == "sms")
        .and_then(|(_, d)| d.provider_message_id.clone())
        .unwrap();
    let updated = s
        .kit
        .record_delivery_status(DeliveryStatusUpdate {
            provider_message_id: Some(pmid.clone()),
            status: Some(DeliveryStatus::Failed),
            provider_status: "undelivered".into(),
            ..DeliveryStatusUpdate::default()
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.id, event.id);
    let d = updated
        .delivery_results
        .iter()
        .find(|(c, _)| c.as_str() == "sms")
        .map(|(_, d)| d.clone())
        .unwrap();
    assert_eq!(d.status, DeliveryStatus::Failed);
    assert_eq!(d.provider_message_id.as_deref(), Some(pmid.as_str()));
    assert_eq!(d.error.unwrap().code, "undelivered");
    s.kit.idle().await;
    assert_eq!(fired.load(Ordering::SeqCst), 1);
    let unknown = s
        .kit
        .record_delivery_status(DeliveryStatusUpdate {
            provider_message_id: Some("nope".into()),
            provider_status: "delivered".into(),
            ..DeliveryStatusUpdate::default()
        })
        .await
        .unwrap();
    assert!(unknown.is_none());
}

/// T-24, T-26: a phone number is one address however it is written: it is
/// stored and looked up without separators, on create, update and resolve.
#[tokio::test]
async fn t24_phone_addresses_are_normalized_on_create_and_resolve() {
    let kit = RoomKit::new();
    let created = kit
        .create_identity(person("ada", "Ada", Some(" +1 (555) 123-4567 "), None))
        .await
        .unwrap();
    assert_eq!(created.channel_addresses[&ChannelType::Sms], vec![PHONE]);
    for written in [PHONE, "+1 555 123 4567", "+1-555-123-4567", " +15551234567"] {
        let found = kit
            .resolve_identity(&ChannelType::Sms, written, None)
            .await
            .unwrap_or_else(|e| panic!("{written:?}: {e}"));
        assert_eq!(found.id.as_str(), "ada");
    }
    // The same number written differently belongs to the same identity.
    let dup = kit
        .create_identity(person("bob", "Bob", Some("+1.555.123.4567"), None))
        .await;
    assert!(dup.is_err(), "a second owner of the same number: {dup:?}");
    // Addresses that are not phone numbers are only trimmed.
    let mut mail = person("eve", "Eve", None, Some(" Eve@Example.org "));
    mail.channel_addresses.insert(
        ChannelType::WhatsappPersonal,
        vec!["1555@s.whatsapp.net".into()],
    );
    let eve = kit.create_identity(mail).await.unwrap();
    assert_eq!(
        eve.channel_addresses[&ChannelType::Email],
        vec!["Eve@Example.org"]
    );
    assert_eq!(
        eve.channel_addresses[&ChannelType::WhatsappPersonal],
        vec!["1555@s.whatsapp.net"]
    );
    // An inbound sender written with separators is identified too.
    assert_eq!(
        roomkit_core::normalize_address(&ChannelType::Sms, "+1 (555) 123-4567"),
        PHONE
    );
}
