// The page's DOM: toasts, the connection badge, project cards and the ticket chat.
// Nothing here talks to the network; portal.js wires it to herald-client and the HTTP API.

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') node.className = value;
    else if (key.startsWith('data-')) node.setAttribute(key, String(value));
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

// -- toasts (react-hot-toast's kinds: success, error, info, warning) ------------------------
const ICONS = { success: '✓', error: '✕', info: 'i', warning: '!' };
const DURATION = { success: 5000, info: 5000, warning: 7000, error: 9000 };

export function toast(type, title, message = '') {
  const kind = ICONS[type] ? type : 'info';
  const node = el('div', { class: `toast toast-${kind}`, 'data-type': kind, role: 'status' },
    el('span', { class: 'toast-icon', ariaHidden: 'true' }, ICONS[kind]),
    el('div', { class: 'toast-body' }, el('strong', {}, title),
       message ? el('p', {}, message) : ''));
  const close = () => node.remove();
  node.addEventListener('click', close);
  $('toasts').prepend(node);
  setTimeout(close, DURATION[kind]);
  while ($('toasts').children.length > 6) $('toasts').lastElementChild.remove();
}

// -- connection badge -------------------------------------------------------------------------
const STATES = { online: 'Online', reconnecting: 'Reconnecting…', offline: 'Offline', unauthorized: 'Signed out' };

export function showConnection(state, shared = false) {
  const badge = $('connection');
  badge.dataset.state = state;
  badge.textContent = STATES[state] || state;
  badge.title = shared ? 'Connection shared with another tab' : '';
}

// -- projects ---------------------------------------------------------------------------------
export function renderProjects(projects, ticketsOf, onOpen) {
  const list = $('projects');
  list.replaceChildren();
  $('no-projects').hidden = projects.length > 0;
  for (const project of projects) {
    const tickets = el('ul', { class: 'tickets' });
    for (const ticket of ticketsOf(project.id)) {
      const button = el('button', { type: 'button', class: 'ticket',
                                    'data-ticket-id': ticket.id },
        el('span', {}, ticket.subject), el('span', { class: 'chip' }, ticket.status));
      button.addEventListener('click', () => onOpen(ticket.id));
      tickets.append(el('li', {}, button));
    }
    list.append(el('li', { class: 'project card', 'data-project-id': project.id },
      el('div', { class: 'project-head' },
        el('h3', {}, project.name), el('span', { class: 'chip project-status' }, '')),
      el('div', { class: 'progress', role: 'progressbar', ariaValueMin: '0',
                  ariaValueMax: '100' }, el('div', { class: 'progress-bar' })),
      el('p', { class: 'progress-label' }),
      tickets));
    setProgress(project.id, project.progress, project.status);
  }
}

export function setProgress(projectId, progress, status) {
  const card = document.querySelector(`.project[data-project-id="${projectId}"]`);
  if (!card) return;
  card.querySelector('.progress').setAttribute('aria-valuenow', String(progress));
  card.querySelector('.progress-bar').style.width = `${progress}%`;
  card.querySelector('.progress-label').textContent = `${progress}% complete`;
  card.querySelector('.project-status').textContent = status;
}

export function setTicketStatus(ticketId, status) {
  for (const chip of document.querySelectorAll(`.ticket[data-ticket-id="${ticketId}"] .chip`)) {
    chip.textContent = status;
  }
}

export function markOpenTicket(ticketId) {
  for (const button of document.querySelectorAll('.ticket')) {
    button.classList.toggle('open', Number(button.dataset.ticketId) === ticketId);
  }
}

// -- chat -------------------------------------------------------------------------------------
function timeOf(iso) {
  const date = iso ? new Date(iso) : new Date();
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function messageNode(text, author, mine, iso) {
  return el('li', { class: mine ? 'message mine' : 'message' },
    el('div', { class: 'meta' }, el('span', { class: 'author' }, author),
       el('time', {}, timeOf(iso))),
    el('p', { class: 'text' }, text));
}

/** Stored messages in messageId order, then pending ones (not acknowledged yet). */
function place(node, messageId) {
  const list = $('messages');
  const later = [...list.querySelectorAll('.message[data-message-id]')]
    .find((other) => Number(other.dataset.messageId) > messageId);
  list.insertBefore(node, later || list.querySelector('.message.pending'));
}

export function openChat(ticket) {
  $('chat').hidden = false;
  $('chat').dataset.ticketId = ticket.id;
  $('chat-title').textContent = ticket.subject;
  setChatTicket(ticket);
  $('messages').replaceChildren();
  showTyping([]);
}

export function setChatTicket(ticket) {
  if (Number($('chat').dataset.ticketId) !== ticket.id) return;
  $('chat-status').textContent = ticket.status;
  $('chat-priority').textContent = ticket.priority;
}

/** Show a stored message once (history and live events may both bring it). */
export function addMessage(msg, me) {
  if (document.querySelector(`#messages [data-message-id="${msg.messageId}"]`)) return false;
  const mine = msg.author.id === me;
  const node = messageNode(msg.message, mine ? 'You' : msg.author.email, mine, msg.createdAt);
  node.dataset.messageId = msg.messageId;
  place(node, msg.messageId);
  scrollDown();
  return true;
}

const acknowledged = new Set();  // clientMessageIds whose ack this tab has seen

/** Queued messages of the open ticket, shown as pending until acknowledged. */
export function showPending(pending, ticketId) {
  const want = new Map(pending.filter((p) => p.ticketId === ticketId
                                      && !acknowledged.has(p.clientMessageId))
    .map((p) => [p.clientMessageId, p]));
  for (const node of document.querySelectorAll('#messages .message.pending')) {
    if (!want.has(node.dataset.clientMessageId)) node.remove();
  }
  for (const [id, item] of want) {
    if (document.querySelector(`#messages [data-client-message-id="${id}"]`)) continue;
    const node = messageNode(item.text, 'You', true, item.queuedAt);
    node.classList.add('pending');
    node.dataset.clientMessageId = id;
    node.querySelector('.meta').append(el('span', { class: 'state' }, 'sending…'));
    $('messages').append(node);
  }
  scrollDown();
}

/** An acknowledged message of ours, shown before (or instead of) its `new-message` event.
 * It replaces the oldest pending message of the same text (the queue is sent in order). */
export function confirmMessage(ack, ticketId, text, me, email) {
  if (!ack.ok || !ack.messageId) return;
  const pending = [...document.querySelectorAll('#messages .message.pending')]
    .find((node) => node.querySelector('.text').textContent === text);
  if (pending) {
    acknowledged.add(pending.dataset.clientMessageId);
    pending.remove();
  }
  if (Number($('chat').dataset.ticketId) !== ticketId) return;
  addMessage({ messageId: ack.messageId, message: text, author: { id: me, email },
               createdAt: new Date().toISOString() }, me);
}

export function showTyping(names) {
  const line = $('typing');
  line.hidden = names.length === 0;
  line.textContent = names.length === 1 ? `${names[0]} is typing…`
    : `${names.slice(0, -1).join(', ')} and ${names.at(-1)} are typing…`;
}

function scrollDown() {
  const list = $('messages');
  list.scrollTop = list.scrollHeight;
}
