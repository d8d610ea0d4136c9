//! The note form's "Public" box (issue 23): checked, the note is stored
//! public and shown as such; unchecked, it stays private, as before.

use axum::http::StatusCode;

use super::{body_text, csrf_of, fixture, get, post, send, signed_in};

#[tokio::test]
async fn the_public_box_makes_a_public_note_and_the_page_marks_it() {
    let f = fixture().await;
    let cookie = signed_in(&f.app, "admin-token").await;
    let csrf = csrf_of(&f.app, &cookie).await;
    let note = format!("/tickets/{}/note", f.ticket);
    let page = body_text(
        send(
            &f.app,
            get(&format!("/tickets/{}", f.ticket), Some(&cookie)),
        )
        .await,
    )
    .await;
    assert!(
        page.contains(r#"type="checkbox" name="public""#),
        "the form has the box"
    );
    for form in [
        format!("value=kept+private&csrf={csrf}"),
        format!("value=told+the+reporter&public=on&csrf={csrf}"),
    ] {
        let response = send(&f.app, post(&note, &cookie, &form)).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{form}");
    }
    let (_, log) = f
        .store
        .ticket(f.ticket)
        .await
        .expect("read")
        .expect("ticket");
    let notes: Vec<(&str, bool)> = log.iter().map(|w| (w.note.as_str(), w.public)).collect();
    assert!(notes.contains(&("kept private", false)), "{notes:?}");
    assert!(notes.contains(&("told the reporter", true)), "{notes:?}");
    let page = body_text(
        send(
            &f.app,
            get(&format!("/tickets/{}", f.ticket), Some(&cookie)),
        )
        .await,
    )
    .await;
    assert!(
        page.contains("<strong>Public: </strong>told the reporter"),
        "the worklog marks it"
    );
}
