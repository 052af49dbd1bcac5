//! The real app, driven as a user would: the natter-desktop binary under
//! Xvfb, controlled through tauri-driver and WebKitWebDriver (Debian's
//! webkit2gtk-driver), against a real natter-server. Ann signs up in the
//! app with a picture; Bob and Carol use the API and the socket. She chats
//! with Bob, sees him type, opens a link he sent (in her browser, not the
//! app's window), finds Carol, makes a group, sees both type and removes
//! Carol as the group's admin. Every screen is saved as a PNG in
//! `$NATTER_SCREENSHOTS` (default: target/tmp/screenshots); the best of
//! them are in docs/screenshots.
//!
//! `NATTER_E2E_APP` picks the binary (scripts/test passes the release
//! build it bundles); by default it is the one cargo built for this test.
#![cfg(target_os = "linux")]

mod common;

use common::driver::*;
use fantoccini::Locator;
use natter_shared::{Chat, Message, User};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ann_chats_one_to_one_and_in_a_group_she_runs() {
    let (server, _server_data, stop_server) = start_server().await;
    let mut bob = Person::sign_up(&server, "Bob").await;
    let mut carol = Person::sign_up(&server, "Carol").await;
    let shots = screenshot_dir();
    let started = start_app("Adwaita").await;
    let app = &started.client;

    // Sign up in the app, against our server, with a picture.
    wait_for_text(app, "#submit", "Log in").await;
    screenshot(app, &shots, "01-login").await;
    type_into(app, "#server", &server).await;
    click(app, "#toggle").await;
    let picture = fixture("avatar.png");
    app.find(Locator::Css("#pic"))
        .await
        .expect("the picture field")
        .send_keys(&picture.to_string_lossy())
        .await
        .expect("picture chosen");
    wait_for_count(app, "img.preview", 1).await;
    type_into(app, "#name", "Ann").await;
    type_into(app, "#email", "ann@example.org").await;
    type_into(app, "#password", "ann's password").await;
    screenshot(app, &shots, "02-sign-up").await;
    click(app, "#submit").await;
    wait_for_text(app, "aside .me", "Ann").await;
    let ann: Vec<User> = bob.get("/api/user?search=ann").await;
    let ann = ann.first().expect("Ann is found").clone();
    assert!(ann.pic.is_some(), "her picture reached the server");

    // Bob writes to Ann: the chat appears in her list, unread.
    let direct: Chat = bob.post("/api/chat", json!({"userId": ann.id})).await;
    bob.write(&direct.id, "Hi Ann, lunch at one?").await;
    bob.write(&direct.id, "The usual place 🍜").await;
    wait_for_text(app, "ul.chats .preview", "The usual place 🍜").await;
    wait_for_text(app, "ul.chats .badge", "2").await;
    screenshot(app, &shots, "03-chat-list").await;

    // She opens it: the new messages are marked; Bob types, she sees it.
    open_chat(app, &direct.id).await;
    wait_for_text(app, ".msg.theirs p", "Hi Ann, lunch at one?").await;
    wait_for_text(app, ".unread-marker", "2 new messages").await;
    bob.typing(&direct.id).await;
    wait_for_text(app, ".typing", "Bob is typing…").await;
    screenshot(app, &shots, "04-chat").await;

    // She answers (Shift+Enter for a second line, Enter sends); Bob sees
    // her typing first, then has her answer.
    type_into(
        app,
        ".composer textarea",
        "Yes! See you there.\u{E008}\u{E007}\u{E008}Bringing Carol?",
    )
    .await;
    bob.hears_typing(&direct.id, &ann.id).await;
    app.find(Locator::Css(".composer textarea"))
        .await
        .expect("composer")
        .send_keys("\u{E007}")
        .await
        .expect("Enter");
    wait_for_text(app, ".msg.mine p", "Bringing Carol?").await;
    wait_until("Bob to have the answer", async || {
        let history: Vec<Message> = bob.get(&format!("/api/message/{}", direct.id)).await;
        history.iter().any(|message| {
            message.content == "Yes! See you there.\nBringing Carol?" && message.sender.id == ann.id
        })
    })
    .await;

    // A link in a message opens in her browser (the system's opener); the
    // window stays on the chat.
    bob.write(&direct.id, "Menu: https://example.org/menu?day=1.")
        .await;
    wait_for_text(app, ".msg.theirs p a", "https://example.org/menu?day=1").await;
    click(app, ".msg.theirs p a").await;
    wait_until("the link handed to the browser", async || {
        opened_links(started.data.path()) == ["https://example.org/menu?day=1"]
    })
    .await;
    wait_for_text(app, ".msg.mine p", "Bringing Carol?").await;

    // "New chat": she finds Carol and sees her card.
    click(app, "#new-chat").await;
    type_into(app, ".panel .search-users", "car").await;
    click(app, &format!("[data-user='{}']", carol.id())).await;
    wait_for_text(app, ".card h3", "Carol").await;
    screenshot(app, &shots, "05-search-users").await;
    click(app, "#message-user").await;
    wait_for_text(app, ".chat-view h2", "Carol").await;

    // "New group" with Bob and Carol; she is its admin.
    click(app, "#new-group").await;
    type_into(app, "#group-name", "Lunch crew").await;
    for person in [&bob, &carol] {
        type_into(app, ".panel .search-users", &person.auth.user.name).await;
        click(app, &format!("[data-user='{}']", person.id())).await;
    }
    wait_for_count(app, ".chips li", 2).await;
    screenshot(app, &shots, "06-new-group").await;
    click(app, "#create-group").await;
    wait_for_text(app, ".chat-view h2", "Lunch crew").await;
    let groups: Vec<Chat> = carol.get("/api/chat").await;
    let group = groups
        .into_iter()
        .find(|chat| chat.chat_name == "Lunch crew")
        .expect("Carol is in the group");

    // Everyone writes; Bob and Carol type at once.
    type_into(app, ".composer textarea", "Table for three at one\u{E007}").await;
    // Sent once the server acked it (the pending mark before it is not
    // checked: the ack may come before any check could see it).
    wait_for_text(
        app,
        ".msg.mine[data-status='sent'] p",
        "Table for three at one",
    )
    .await;
    bob.write(&group.id, "I'll be there").await;
    carol.write(&group.id, "Me too!").await;
    wait_for_text(app, ".msg.theirs .sender", "Carol").await;
    bob.typing(&group.id).await;
    carol.typing(&group.id).await;
    wait_until("both typists shown", async || {
        let line = texts(app, ".typing").await.concat();
        line == "Bob and Carol are typing…" || line == "Carol and Bob are typing…"
    })
    .await;
    screenshot(app, &shots, "07-group-chat").await;

    // Group info: the admin marked; she removes Carol.
    click(app, ".chat-title").await;
    wait_for_count(app, ".members li", 3).await;
    wait_for_text(app, ".members .tag", "admin").await;
    screenshot(app, &shots, "08-group-info").await;
    click(app, "[aria-label='Remove Carol']").await;
    wait_for_text(app, ".confirm p", "Remove Carol from").await;
    click(app, "#confirm-yes").await;
    wait_for_count(app, ".members li", 2).await;
    wait_until("Carol to be out of the group", async || {
        let chats: Vec<Chat> = carol.get("/api/chat").await;
        !chats.iter().any(|chat| chat.id == group.id)
    })
    .await;

    // By keyboard: Ctrl+K opens "New chat", Ctrl+G "New group", Escape
    // closes each.
    click(app, ".composer textarea").await;
    for (keys, panel) in [
        ("\u{E009}k\u{E009}", "New chat"),
        ("\u{E009}g\u{E009}", "New group"),
    ] {
        press(app, keys).await;
        wait_for_count(app, &format!(".panel[aria-label='{panel}']"), 1).await;
        press(app, "\u{E00C}").await;
        wait_for_count(app, ".panel", 0).await;
    }

    // Log out; a wrong password gets the server's words; then back in,
    // her chats there again.
    click(app, "#logout").await;
    wait_for_text(app, "#submit", "Log in").await;
    type_into(app, "#email", "ann@example.org").await;
    type_into(app, "#password", "not her password").await;
    click(app, "#submit").await;
    wait_for_text(app, ".login [role='alert']", "wrong email or password").await;
    type_into(app, "#password", "ann's password").await;
    click(app, "#submit").await;
    wait_for_text(app, "aside .me", "Ann").await;
    open_chat(app, &group.id).await;
    wait_for_text(app, ".msg.theirs p", "Me too!").await;

    // The smallest window: nothing sticks out sideways.
    app.set_window_size(800, 600).await.expect("resized");
    wait_until("the window at 800x600", async || {
        app.execute("return window.innerWidth", vec![])
            .await
            .is_ok_and(|width| width.as_u64().is_some_and(|width| width <= 800))
    })
    .await;
    let overflow = app
        .execute(
            "return [...document.querySelectorAll('body *')]
               .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1
                 && !e.closest('[style*=\"contain\"]'))
               .map((e) => e.tagName + '.' + e.className)",
            vec![],
        )
        .await
        .expect("measured");
    assert_eq!(
        overflow,
        json!([]),
        "elements beyond the window's right edge"
    );
    screenshot(app, &shots, "09-800x600").await;

    // The server goes away: a banner says so; the chat stays readable.
    let _ = stop_server.send(());
    wait_for_count(app, ".banner", 1).await;
    wait_for_text(app, ".msg.theirs p", "Me too!").await;
    wait_for_text(
        app,
        ".msg.mine[data-status='sent'] p",
        "Table for three at one",
    )
    .await;
    screenshot(app, &shots, "10-offline").await;
    let _ = app.clone().close().await;
}

/// A chat with more news than the window holds opens at its first unread
/// message, the marker at the top, rather than at the newest (the list is
/// virtualized: rows far from the view are not in the page at all); the
/// window's title counts the news until then, and a button below goes to
/// the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_with_more_news_than_fits_opens_at_its_first_unread() {
    let AnnWithBob {
        app: started,
        bob,
        direct,
        ..
    } = &ann_with_bob().await;
    let app = &started.client;
    // More than the first page holds (50): the marker starts on the page's
    // oldest message and moves up as the older page brings the rest.
    for n in 1..=60 {
        bob.write(&direct.id, &format!("News {n}")).await;
    }
    wait_for_text(app, "ul.chats .badge", "60").await;
    // The window's title counts them too (the taskbar shows it), until read.
    wait_for_window_title(started, r"\(60\) Natter").await;
    open_chat(app, &direct.id).await;
    wait_for_text(app, ".unread-marker", "60 new messages").await;
    wait_for_window_title(started, "Natter").await;
    wait_until("the marker and the first unread on screen", async || {
        app.execute(
            "const view = document.querySelector('.messages > div').getBoundingClientRect();
             const seen = (e) => { const r = e.getBoundingClientRect();
               return r.top >= view.top - 1 && r.bottom <= view.bottom + 1; };
             const marker = document.querySelector('.unread-marker');
             const first = [...document.querySelectorAll('.msg.theirs p')]
               .find((p) => p.textContent === arguments[0]);
             return !!marker && !!first && seen(marker) && seen(first);",
            vec![json!("News 1")],
        )
        .await
        .is_ok_and(|seen| seen == json!(true))
    })
    .await;
    // A one-to-one chat shows no sender's name; a screen reader reads one.
    wait_for_text(app, ".msg.theirs .sr-only", "Bob:").await;
    let newest_shown = texts(app, ".msg.theirs p").await;
    assert!(
        !newest_shown.iter().any(|text| text == "News 60"),
        "the view is at the first unread, not the newest: {newest_shown:?}"
    );

    // A button goes to the newest, counting the news below, and what comes
    // in while she reads above.
    wait_for_text(app, ".to-newest .badge", "60").await;
    bob.write(&direct.id, "News 61").await;
    wait_for_text(app, ".to-newest .badge", "61").await;
    // From the keyboard: the button goes once it has done its work, and
    // the keyboard goes on to the history, not to the page.
    app.execute("document.querySelector('.to-newest').focus();", vec![])
        .await
        .expect("focused");
    click(app, ".to-newest").await;
    wait_for_text(app, ".msg.theirs p", "News 61").await;
    wait_for_count(app, ".to-newest", 0).await;
    let focused = app
        .execute(
            "return document.activeElement?.getAttribute('aria-label');",
            vec![],
        )
        .await
        .expect("asked");
    assert_eq!(focused, json!("Message history"));
    let _ = app.clone().close().await;
}

/// A link middle-clicked opens in the browser too, and so does one that asks
/// for a new window (`target="_blank"`: the UI makes none, so the test puts
/// one in the page, to reach the shell's new-window handler); the app opens
/// no window of its own for either. (Its own test: typing after WebDriver's
/// pointer actions lost its capitals in the longer test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_middle_clicked_or_for_a_new_window_open_in_the_browser() {
    let AnnWithBob {
        app: started,
        bob,
        direct,
        ..
    } = &ann_with_bob().await;
    let app = &started.client;
    bob.write(&direct.id, "Tickets: https://example.org/tickets")
        .await;
    open_chat(app, &direct.id).await;
    wait_for_text(app, ".msg.theirs p a", "https://example.org/tickets").await;
    middle_click(app, ".msg.theirs p a").await;
    wait_until("the link handed to the browser", async || {
        opened_links(started.data.path()) == ["https://example.org/tickets"]
    })
    .await;
    app.execute(
        "const a = document.createElement('a');
         a.id = 'new-window-link'; a.href = 'https://example.org/elsewhere';
         a.target = '_blank'; a.textContent = 'elsewhere';
         document.querySelector('.chat-view header').append(a);",
        vec![],
    )
    .await
    .expect("a link added");
    click(app, "#new-window-link").await;
    wait_until("the new window's link handed to the browser", async || {
        opened_links(started.data.path())
            == [
                "https://example.org/tickets",
                "https://example.org/elsewhere",
            ]
    })
    .await;
    wait_for_text(app, ".msg.theirs p", "Tickets:").await;
    assert_eq!(
        app.windows().await.expect("the app's windows").len(),
        1,
        "no window of the app's own for a link"
    );
    let _ = app.clone().close().await;
}

/// What Ann was writing and did not send is still there after the app
/// restarts: in the chat list ("Draft: ...") and in the chat's composer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_is_still_there_after_a_restart() {
    let AnnWithBob {
        app: started,
        bob,
        direct,
        ..
    } = &ann_with_bob().await;
    let app = &started.client;
    bob.write(&direct.id, "Plans for Friday?").await;
    open_chat(app, &direct.id).await;
    wait_for_text(app, ".msg.theirs p", "Plans for Friday?").await;
    type_into(app, ".composer textarea", "Thinking about it").await;
    // Each key's draft reaches the cache a moment later; the app is ended
    // here more abruptly than a user quits it.
    wait_until("the engine to keep the draft", async || {
        app.execute_async(
            "const done = arguments[arguments.length - 1];
             window.__TAURI_INTERNALS__.invoke('drafts').then(done, () => done(null));",
            vec![],
        )
        .await
        .is_ok_and(|drafts| drafts[&direct.id] == json!("Thinking about it"))
    })
    .await;
    close_and_wait(app.clone(), started.data.path()).await;

    let app = started.host.launch(&app_binary()).await;
    let row = format!("[data-chat='{}'] .preview", direct.id);
    wait_for_text(&app, &row, "Draft: Thinking about it").await;
    open_chat(&app, &direct.id).await;
    wait_until("the composer to hold the draft", async || {
        let composer = app.find(Locator::Css(".composer textarea")).await;
        match composer {
            Ok(field) => field
                .prop("value")
                .await
                .is_ok_and(|value| value.as_deref() == Some("Thinking about it")),
            Err(_) => false,
        }
    })
    .await;
    let _ = app.close().await;
}

/// Removed from a group, Ann can still read it, has nothing to write in,
/// and can delete it from her computer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_ann_is_removed_from_stays_readable_until_she_deletes_it() {
    let AnnWithBob {
        app: started,
        bob,
        direct,
        server,
        ..
    } = &ann_with_bob().await;
    let app = &started.client;
    let ann = direct
        .users
        .iter()
        .find(|user| user.id != bob.id())
        .expect("ann in the chat");
    let carol = Person::sign_up(server, "Carol").await;
    let group: Chat = bob
        .post(
            "/api/chat/group",
            json!({"name": "Team", "users": [ann.id, carol.id()]}),
        )
        .await;
    bob.write(&group.id, "Welcome").await;
    open_chat(app, &group.id).await;
    wait_for_text(app, ".msg.theirs p", "Welcome").await;

    let _: Chat = bob
        .put(
            "/api/chat/groupremove",
            json!({"chatId": group.id, "userId": ann.id}),
        )
        .await;
    wait_for_text(app, ".left-note p", "You're no longer in this group.").await;
    wait_for_count(app, ".composer", 0).await;
    wait_for_text(app, ".msg.theirs p", "Welcome").await;
    screenshot(app, &screenshot_dir(), "12-left-group").await;
    click(app, "#delete-chat").await;
    click(app, "#delete-yes").await;
    wait_for_count(app, &format!("[data-chat='{}']", group.id), 0).await;
    wait_for_count(app, ".chat-view", 0).await;
    let _ = app.clone().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_is_dark_on_a_dark_desktop() {
    let (server, _server_data, _stop) = start_server().await;
    let bob = Person::sign_up(&server, "Bob").await;
    let shots = screenshot_dir();
    let started = start_app("Adwaita:dark").await;
    let app = &started.client;

    wait_for_text(app, "#submit", "Log in").await;
    let dark = app
        .execute(
            "return matchMedia('(prefers-color-scheme: dark)').matches",
            vec![],
        )
        .await
        .expect("asked");
    assert_eq!(dark, json!(true), "WebKit sees the desktop's dark theme");
    sign_up_in_app(app, &server, "Ann").await;

    let (_, direct) = bob.direct_chat_with("ann").await;
    bob.write(&direct.id, "Evening! Dark mode suits you 🌙")
        .await;
    open_chat(app, &direct.id).await;
    wait_for_text(app, ".msg.theirs p", "Dark mode suits you").await;
    type_into(app, ".composer textarea", "Easier on the eyes\u{E007}").await;
    wait_for_text(app, ".msg.mine[data-status='sent'] p", "Easier on the eyes").await;
    let background = app
        .execute(
            "return getComputedStyle(document.body).backgroundColor",
            vec![],
        )
        .await
        .expect("asked");
    assert_eq!(
        background,
        json!("rgb(11, 20, 26)"),
        "the dark palette is in use"
    );
    screenshot(app, &shots, "11-dark").await;
    let _ = app.clone().close().await;
}
