//! The crowd a run uses: users (signed up once, then reused from a state
//! file, since argon2id makes sign-ups slow on purpose) and their chats
//! (groups of a given size, and one-to-one chats around a ring).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use natter_shared::Chat;
use natter_shared::api::{
    AuthResponse, CreateGroupRequest, LoginRequest, OpenChatRequest, SignUpRequest,
};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

/// How many setup requests run at once.
const SETUP_PARALLEL: usize = 16;
const PASSWORD: &str = "natter-load-password";
/// How many times a sign-up answered 503 (too many at once) is sent.
const SETUP_TRIES: usize = 10;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadUser {
    pub id: String,
    pub email: String,
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadChat {
    pub id: String,
    pub members: Vec<usize>,
}

/// What a run needs, and what the state file keeps between runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Crowd {
    pub server: String,
    pub seed: u64,
    pub group_size: usize,
    pub direct: bool,
    /// How far on each user's one-to-one partner is (1: the next user).
    #[serde(default = "next_user")]
    pub direct_step: usize,
    pub users: Vec<LoadUser>,
    pub chats: Vec<LoadChat>,
}

fn next_user() -> usize {
    1
}

impl Crowd {
    /// The chats each user is in, by index.
    pub fn chats_of(&self) -> Vec<Vec<usize>> {
        let mut of = vec![Vec::new(); self.users.len()];
        for (index, chat) in self.chats.iter().enumerate() {
            for &member in &chat.members {
                of[member].push(index);
            }
        }
        of
    }
}

pub struct Setup<'a> {
    pub http: &'a reqwest::Client,
    pub server: &'a str,
    pub users: usize,
    pub group_size: usize,
    pub direct: bool,
    pub direct_step: usize,
    pub seed: u64,
    pub invitation_code: Option<&'a str>,
}

impl Setup<'_> {
    /// The crowd from `state` when it matches, else a new one, saved there.
    pub async fn crowd(&self, state: &Path) -> anyhow::Result<Crowd> {
        if let Some(crowd) = self.reuse(state).await {
            eprintln!(
                "reusing {} users and {} chats from {}",
                crowd.users.len(),
                crowd.chats.len(),
                state.display()
            );
            return Ok(crowd);
        }
        let started = std::time::Instant::now();
        let users = self.sign_up_all().await?;
        eprintln!(
            "{} users signed up or logged in in {:.1} s ({:.0}/s, argon2id at the server's cost)",
            users.len(),
            started.elapsed().as_secs_f64(),
            users.len() as f64 / started.elapsed().as_secs_f64()
        );
        let chats = self.make_chats(&users).await?;
        let crowd = Crowd {
            server: self.server.to_owned(),
            seed: self.seed,
            group_size: self.group_size,
            direct: self.direct,
            direct_step: self.direct_step,
            users,
            chats,
        };
        if let Some(dir) = state.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(state, serde_json::to_vec(&crowd)?)
            .with_context(|| format!("writing {}", state.display()))?;
        Ok(crowd)
    }

    async fn reuse(&self, state: &Path) -> Option<Crowd> {
        let crowd: Crowd = serde_json::from_slice(&std::fs::read(state).ok()?).ok()?;
        let same = crowd.server == self.server
            && crowd.seed == self.seed
            && crowd.users.len() == self.users
            && crowd.group_size == self.group_size
            && crowd.direct == self.direct
            && crowd.direct_step == self.direct_step;
        if !same {
            return None;
        }
        // Tokens expire, and servers get wiped: check one.
        let first = crowd.users.first()?;
        let response = self
            .http
            .get(format!("{}/api/chat", self.server))
            .bearer_auth(&first.token)
            .send()
            .await
            .ok()?;
        response.status().is_success().then_some(crowd)
    }

    async fn sign_up_all(&self) -> anyhow::Result<Vec<LoadUser>> {
        let http = self.http;
        let results: Vec<anyhow::Result<LoadUser>> = futures_util::stream::iter(0..self.users)
            .map(|index| async move {
                let email = format!("load-{}-{index}@natter.test", self.seed);
                self.sign_up_or_log_in(http, index, &email).await
            })
            .buffered(SETUP_PARALLEL)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Signs the user up, or logs in when an earlier run did. A server
    /// with too many sign-ups or logins at once (several load processes
    /// setting up together) answers 503: tried again after a pause.
    async fn sign_up_or_log_in(
        &self,
        http: &reqwest::Client,
        index: usize,
        email: &str,
    ) -> anyhow::Result<LoadUser> {
        let mut pause = Duration::from_millis(100);
        for _ in 1..SETUP_TRIES {
            let response = self.sign_up_or_log_in_once(http, index, email).await?;
            if response.status() != StatusCode::SERVICE_UNAVAILABLE {
                return user_from(response, email).await;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        let response = self.sign_up_or_log_in_once(http, index, email).await?;
        user_from(response, email).await
    }

    async fn sign_up_or_log_in_once(
        &self,
        http: &reqwest::Client,
        index: usize,
        email: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let sign_up = SignUpRequest {
            name: format!("Load User {index}"),
            email: email.to_owned(),
            password: PASSWORD.to_owned(),
            invitation_code: self.invitation_code.map(str::to_owned),
        };
        let response = http
            .post(format!("{}/api/user", self.server))
            .json(&sign_up)
            .send()
            .await?;
        if response.status() != StatusCode::CONFLICT {
            return Ok(response);
        }
        let login = LoginRequest {
            email: email.to_owned(),
            password: PASSWORD.to_owned(),
        };
        Ok(http
            .post(format!("{}/api/user/login", self.server))
            .json(&login)
            .send()
            .await?)
    }

    /// Groups of `group_size` consecutive users, and each user's one-to-one
    /// chat with the one `direct_step` further around the ring (each pair
    /// once).
    async fn make_chats(&self, users: &[LoadUser]) -> anyhow::Result<Vec<LoadChat>> {
        let mut plans: Vec<Vec<usize>> = Vec::new();
        if self.group_size >= 3 {
            for start in (0..users.len()).step_by(self.group_size) {
                let members: Vec<usize> =
                    (start..(start + self.group_size).min(users.len())).collect();
                if members.len() >= 3 {
                    plans.push(members);
                }
            }
        }
        if self.direct && users.len() >= 2 {
            let mut pairs = std::collections::HashSet::new();
            for index in 0..users.len() {
                let partner = (index + self.direct_step) % users.len();
                if partner != index && pairs.insert((index.min(partner), index.max(partner))) {
                    plans.push(vec![index, partner]);
                }
            }
        }
        let users = Arc::new(users.to_vec());
        let results: Vec<anyhow::Result<LoadChat>> = futures_util::stream::iter(plans)
            .map(|members| {
                let users = users.clone();
                async move { self.make_chat(&users, members).await }
            })
            .buffered(SETUP_PARALLEL)
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn make_chat(&self, users: &[LoadUser], members: Vec<usize>) -> anyhow::Result<LoadChat> {
        let owner = &users[members[0]];
        let request = if members.len() == 2 {
            self.http
                .post(format!("{}/api/chat", self.server))
                .json(&OpenChatRequest {
                    user_id: users[members[1]].id.clone(),
                })
        } else {
            self.http
                .post(format!("{}/api/chat/group", self.server))
                .json(&CreateGroupRequest {
                    name: format!("Load group {}", members[0] / self.group_size.max(1)),
                    users: members[1..].iter().map(|&m| users[m].id.clone()).collect(),
                })
        };
        let response = request.bearer_auth(&owner.token).send().await?;
        let chat: Chat = json_answer(response, "creating a chat").await?;
        Ok(LoadChat {
            id: chat.id,
            members,
        })
    }
}

/// The JSON of a successful answer; else an error naming what was being done
/// with the server's status and words.
async fn user_from(response: reqwest::Response, email: &str) -> anyhow::Result<LoadUser> {
    let auth: AuthResponse = json_answer(response, &format!("signing up {email}")).await?;
    Ok(LoadUser {
        id: auth.user.id,
        email: email.to_owned(),
        token: auth.token,
    })
}

pub(crate) async fn json_answer<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    doing: &str,
) -> anyhow::Result<T> {
    let status = response.status();
    if !status.is_success() {
        bail!(
            "{doing}: {status} {}",
            response.text().await.unwrap_or_default()
        );
    }
    Ok(response.json().await?)
}
