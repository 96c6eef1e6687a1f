// The notification bell: the unread count ("99+" past 99), the inbox as a dropdown (opening it
// marks what it shows seen, clicking an item marks it read, "Mark all read"), a short sound
// for each new notification (muted or not, remembered in localStorage), and the browser's
// Notification API while the page is hidden. Every window of the user agrees: the counts and
// the open list follow herald-client's inbox changes (inbox-updated events).

import { el } from './ui.js';

const $ = (id) => document.getElementById(id);
const MUTE_KEY = 'herald.portal.muted';
const PAGE = 20;

/** The bell's label for a count: '' for none, '99+' past 99 (and when the server capped it). */
export function countLabel(counts) {
  const unread = counts?.unread ?? 0;
  if (unread <= 0) return '';
  return unread > 99 || counts.countsCapped ? '99+' : String(unread);
}

export class Bell {
  constructor(herald) {
    this.herald = herald;
    this.items = [];
    this.isOpen = false;
    this.muted = localStorage.getItem(MUTE_KEY) === 'true';
    this.beeps = 0;           // sounds played (shown to tests)
    this.systemNotices = 0;   // Notification API notices shown (shown to tests)
    this.audio = null;
    this.listing = null;
    herald.inbox.onChange((counts, change) => this._changed(counts, change));
    $('bell').addEventListener('click', () => (this.isOpen ? this.close() : this.open()));
    $('mark-all-read').addEventListener('click', () => this.herald.inbox.markAllRead());
    $('mute').addEventListener('click', () => {
      this.setMuted(!this.muted);
      if (!this.muted) this._askPermission(); // a click: browsers ask only after a gesture
    });
    document.addEventListener('keydown', (e) => { if (e.key === 'Escape') this.close(); });
    document.addEventListener('click', (e) => {
      if (this.isOpen && !e.target.closest?.('.bell-wrap')) this.close();
    });
    this.setMuted(this.muted);
    // Browsers start audio only after a gesture: the first one on the page unlocks it.
    document.addEventListener('pointerdown', () => this._audio()?.resume?.(), { once: true });
  }

  /** Read the counts (and the first page) over HTTP. */
  async start() {
    await this._list();
    this._showCount(this.herald.inbox.counts);
  }

  async open() {
    this.isOpen = true;
    $('inbox').hidden = false;
    $('bell').setAttribute('aria-expanded', 'true');
    this._askPermission();
    await this._list();
    const unseen = this.items.filter((i) => !i.seen).map((i) => i.id);
    if (unseen.length) await this.herald.inbox.markSeen(unseen);
  }

  close() {
    if (!this.isOpen) return;
    this.isOpen = false;
    $('inbox').hidden = true;
    $('bell').setAttribute('aria-expanded', 'false');
  }

  setMuted(muted) {
    this.muted = muted;
    localStorage.setItem(MUTE_KEY, String(muted));
    const button = $('mute');
    button.setAttribute('aria-pressed', String(muted));
    button.classList.toggle('is-muted', muted);
    const label = muted ? 'Unmute notification sound' : 'Mute notification sound';
    button.setAttribute('aria-label', label);
    button.title = label;
  }

  /** A new notification reached the page: a sound, or a system notice when hidden. */
  alert(title, message) {
    if (document.visibilityState === 'hidden') {
      // One notice per user, not per window: the tab holding the connection shows it.
      if (this.herald.isLeader && 'Notification' in window && Notification.permission === 'granted') {
        new Notification(title, { body: message, tag: 'herald' }); // eslint-disable-line no-new
        this.systemNotices += 1;
      }
      return;
    }
    if (!this.muted) this._beep();
  }

  // -- internals -----------------------------------------------------------------------------
  _changed(counts, change) {
    this._showCount(counts);
    if (this.isOpen && change) this._list();
  }

  _showCount(counts) {
    const label = countLabel(counts);
    const badge = $('bell-count');
    badge.hidden = label === '';
    badge.textContent = label;
    $('bell').setAttribute('aria-label', label ? `Notifications, ${counts.unread} unread` : 'Notifications');
  }

  /** One list at a time; a change meanwhile lists again after it. */
  async _list() {
    if (this.listing) {
      this.again = true;
      return this.listing;
    }
    this.listing = (async () => {
      do {
        this.again = false;
        try {
          const page = await this.herald.inbox.list({ limit: PAGE });
          this.items = page.items;
          this._render();
          this._showCount(page.counts);
        } catch { /* offline: the list stays as it was */ }
      } while (this.again);
    })();
    try { await this.listing; } finally { this.listing = null; }
  }

  _render() {
    const list = $('inbox-items');
    list.replaceChildren();
    $('inbox-empty').hidden = this.items.length > 0;
    for (const item of this.items) {
      const node = el('li', { class: `inbox-item inbox-${item.type}${item.read ? '' : ' unread'}`,
                              'data-id': item.id },
        el('button', { type: 'button', class: 'inbox-open' },
          el('strong', {}, item.title),
          item.message ? el('span', {}, item.message) : '',
          el('time', {}, new Date(item.createdAt).toLocaleString([], { dateStyle: 'short', timeStyle: 'short' }))));
      node.querySelector('button').addEventListener('click', () => {
        if (!item.read) this.herald.inbox.markRead([item.id]);
      });
      list.append(node);
    }
  }

  _beep() {
    try {
      const ctx = this._audio();
      if (!ctx) return;
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = 'sine';
      osc.frequency.value = 880;
      gain.gain.setValueAtTime(0.0001, ctx.currentTime);
      gain.gain.exponentialRampToValueAtTime(0.15, ctx.currentTime + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, ctx.currentTime + 0.25);
      osc.connect(gain).connect(ctx.destination);
      osc.start();
      osc.stop(ctx.currentTime + 0.3);
      this.beeps += 1;
    } catch { /* no audio output: nothing to play */ }
  }

  _audio() {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return null;
    this.audio ??= new Context();
    return this.audio;
  }

  _askPermission() {
    if ('Notification' in window && Notification.permission === 'default') {
      Notification.requestPermission().catch(() => {});
    }
  }
}
