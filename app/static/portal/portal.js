// The client portal: projects with their progress, ticket chat with typing indicators,
// toasts for what changes, a connection badge and pending messages, over herald-client.
// State comes from the HTTP API on load (and after onReset); changes arrive as events.

import { createHerald } from '@herald-notify/client';
import { choose, demoUsers, resume, signOut, useToken } from './session.js';
import * as ui from './ui.js';

const $ = (id) => document.getElementById(id);
const TYPING_IDLE_MS = 2000;   // stop typing after this long without a keystroke
const TYPING_STALE_MS = 8000;  // forget someone's typing if their stop never comes

const state = {
  session: null,
  herald: null,
  projects: new Map(),   // id -> project
  tickets: new Map(),    // id -> ticket
  openTicket: null,      // id of the ticket in the chat panel
  typing: new Map(),     // userId -> {name, timer}
  received: [],          // {type, stream, offset} of each durable event handed to the page
};
const DURABLE = ['project-updated', 'ticket-updated', 'new-message', 'notification',
                 'document-added', 'intervention-updated', 'quote-updated'];

// -- loading state over HTTP -------------------------------------------------------------
async function loadProjects() {
  const { projects } = await state.session.api('/api/projects');
  state.projects = new Map(projects.map((p) => [p.id, p]));
  const lists = await Promise.all(projects.map(
    (p) => state.session.api(`/api/projects/${p.id}/tickets`)));
  state.tickets = new Map(lists.flatMap((l) => l.tickets).map((t) => [t.id, t]));
  ui.renderProjects(projects, (id) => [...state.tickets.values()].filter((t) => t.projectId === id),
                    openTicket);
  ui.markOpenTicket(state.openTicket);
  // Not awaited here (a join waits until online): { joined } settles once all are followed.
  return { joined: Promise.all(projects.map(
    (project) => state.herald.joinProject(project.id).then(refused('project', project.id)))) };
}

async function loadMessages(ticketId) {
  const { messages } = await state.session.api(`/api/tickets/${ticketId}/messages`);
  if (state.openTicket !== ticketId) return;
  for (const msg of messages) ui.addMessage(msg, me());
}

function refused(what, id) {
  return (ack) => {
    if (ack && ack.ok === false) ui.toast('error', `Cannot follow ${what} ${id}`, ack.error?.message);
  };
}

async function openTicket(ticketId) {
  const ticket = state.tickets.get(ticketId);
  if (!ticket || state.openTicket === ticketId) return { joined: Promise.resolve() };
  if (state.openTicket !== null) {
    stopTyping();
    state.herald.leaveTicket(state.openTicket);
  }
  state.openTicket = ticketId;
  state.typing.clear();
  ui.openChat(ticket);
  ui.markOpenTicket(ticketId);
  const url = new URL(location.href);
  url.searchParams.set('ticket', String(ticketId));
  history.replaceState(null, '', url);
  // Join first, then read the history: whatever commits in between comes as an event, and
  // both paths show a message once (by its id).
  const joined = state.herald.joinTicket(ticketId).then(refused('ticket', ticketId));
  ui.showPending(state.herald.pendingMessages(), ticketId);
  await loadMessages(ticketId).catch((e) => ui.toast('error', 'Could not load the chat', e.message));
  return { joined };
}

function onReset(stream) {
  // The stream's history could not be replayed: reload what it describes.
  if (stream.startsWith('project-')) loadProjects().catch(() => {});
  if (stream === `ticket-${state.openTicket}`) loadMessages(state.openTicket).catch(() => {});
}

const me = () => state.session.user.id;

// -- events -------------------------------------------------------------------------------
function wire(herald) {
  // What the client delivered, in order (for debugging, and for the browser tests that count
  // lost or repeated events); the last 2000.
  for (const type of DURABLE) {
    herald.on(type, (_payload, meta) => {
      state.received.push({ type, stream: meta?.stream, offset: meta?.offset });
      if (state.received.length > 2000) state.received.shift();
    });
  }
  herald.onProjectUpdate(({ projectId, progress, status }) => {
    const project = state.projects.get(projectId);
    if (project) Object.assign(project, { progress, status });
    ui.setProgress(projectId, progress, status);
    ui.toast('success', `${project?.name ?? `Project ${projectId}`}: ${progress}%`,
             `Status: ${status}`);
  });
  herald.onTicketUpdate(({ ticketId, status, priority }) => {
    const ticket = state.tickets.get(ticketId);
    const changed = ticket && ticket.status !== status;
    if (ticket) Object.assign(ticket, { status, priority });
    ui.setTicketStatus(ticketId, status);
    if (ticket) ui.setChatTicket(ticket);
    const done = ['resolved', 'closed'].includes(status);
    ui.toast(done ? 'success' : 'info',
             `Ticket ${changed ? status : 'updated'}: ${ticket?.subject ?? `#${ticketId}`}`,
             `Priority: ${priority}`);
  });
  herald.onNewMessage((msg) => {
    if (msg.ticketId === state.openTicket) ui.addMessage(msg, me());
    if (msg.author.id !== me()) {
      clearTyping(msg.author.id);
      ui.toast('info', `New message from ${msg.author.email}`, msg.message.slice(0, 120));
    }
  });
  herald.onNotification(({ type, title, message }) => ui.toast(type, title, message));
  herald.onDocumentAdded(({ projectId, document }) => {
    ui.toast('info', `Document added: ${document.name}`, state.projects.get(projectId)?.name);
  });
  herald.onInterventionUpdate(({ projectId, intervention }) => {
    const where = state.projects.get(projectId)?.name ?? `Project ${projectId}`;
    const title = intervention.title ? `“${intervention.title}”` : `#${intervention.id}`;
    if (intervention.status === 'done') ui.toast('success', `Intervention finished: ${title}`, where);
    if (intervention.status === 'cancelled') ui.toast('warning', `Intervention cancelled: ${title}`, where);
  });
  herald.onQuoteUpdate(({ quoteId, status }) => {
    const bad = ['rejected', 'expired'].includes(status);
    ui.toast(bad ? 'warning' : 'info', `Quote #${quoteId}: ${status}`);
  });
  herald.onTyping(({ ticketId, userId, userName, isTyping }) => {
    if (ticketId !== state.openTicket || userId === me()) return;
    if (isTyping) {
      clearTimeout(state.typing.get(userId)?.timer);
      state.typing.set(userId, { name: userName,
                                 timer: setTimeout(() => clearTyping(userId), TYPING_STALE_MS) });
      showTyping();
    } else {
      clearTyping(userId);
    }
  });
  herald.onConnectionChange((connection) => {
    ui.showConnection(connection, !herald.isLeader);
    if (connection !== 'online') {
      state.typing.clear();
      showTyping();
    }
  });
  herald.onPendingChange((pending) => ui.showPending(pending, state.openTicket));
}

function clearTyping(userId) {
  clearTimeout(state.typing.get(userId)?.timer);
  if (state.typing.delete(userId)) showTyping();
}

function showTyping() {
  ui.showTyping([...state.typing.values()].map((t) => t.name));
}

// -- composing ----------------------------------------------------------------------------
let typingTimer = null;

function keystroke() {
  if (state.openTicket === null) return;
  if (typingTimer === null) state.herald.startTyping(state.openTicket);
  clearTimeout(typingTimer);
  typingTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
  if (typingTimer === null) return;
  clearTimeout(typingTimer);
  typingTimer = null;
  if (state.openTicket !== null) state.herald.stopTyping(state.openTicket);
}

function send(event) {
  event.preventDefault();
  const input = $('message-input');
  const text = input.value;
  const ticketId = state.openTicket;
  if (!text.trim() || ticketId === null) return;
  input.value = '';
  stopTyping();
  state.herald.sendMessage(ticketId, text).then((ack) => {
    if (ack.ok) {
      ui.confirmMessage(ack, ticketId, text, me(), state.session.user.email);
    } else {
      ui.toast('error', 'Message refused', ack.error?.message ?? ack.error?.code);
    }
  }, (error) => ui.toast('error', 'Message not sent', error.message));
}

// -- start ----------------------------------------------------------------------------------
async function open(session) {
  state.session = session;
  session.onExpired = () => {  // production: nobody can mint one here; ask for a new token
    session.onExpired = null;
    ui.toast('error', 'Your access token has expired', 'Sign in again; unsent messages are kept.');
    setTimeout(signOut, 3000);
  };
  $('who').hidden = false;
  $('who-name').textContent = session.user.name || session.user.email;
  $('who-role').textContent = session.user.role;
  $('switch-user').addEventListener('click', signOut);
  $('portal').hidden = false;
  $('connection').hidden = false;
  const herald = await createHerald({
    url: location.origin,
    getToken: () => session.getToken(),
    onReset,
    userName: session.user.name || session.user.email,
  });
  state.herald = herald;
  wire(herald);
  ui.showConnection(herald.state, !herald.isLeader);
  $('message-input').addEventListener('input', keystroke);
  $('send-form').addEventListener('submit', send);
  window.heraldPortal = { herald, session, received: state.received, ready: false };
  const following = [(await loadProjects()).joined];
  const wanted = Number(new URLSearchParams(location.search).get('ticket'));
  const first = state.tickets.has(wanted) ? wanted : state.tickets.keys().next().value;
  if (first !== undefined) following.push((await openTicket(first)).joined);
  // Ready: state loaded and every stream of it followed (the joins acknowledged).
  await Promise.all(following);
  window.heraldPortal.ready = true;
  document.body.dataset.ready = 'true';
}

async function signIn(users) {
  $('signin').hidden = false;
  if (users) {
    const select = $('pick-user');
    for (const user of users) {
      select.append(new Option(`${user.name || user.email} · ${user.role} (${user.email})`,
                               String(user.id)));
    }
    $('pick-form').hidden = false;
    $('pick-form').addEventListener('submit', (e) => { e.preventDefault(); choose(select.value); });
    $('signin-hint').textContent = users.length ? '' : 'No users yet: run `herald seed`.';
  } else {
    $('token-form').hidden = false;
    $('token-form').addEventListener('submit', (e) => {
      e.preventDefault();
      useToken($('token-input').value);
    });
  }
}

async function main() {
  const users = await demoUsers();
  const session = await resume(users);
  if (session) await open(session);
  else await signIn(users);
}

main().catch((error) => ui.toast('error', 'The portal could not start', error.message));
