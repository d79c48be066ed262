// Modal dialogs of the web client: browse/create channels, start a DM, channel settings, user
// settings and the admin page. Each receives the app context (`ctx` in app.js): the API
// function, the current state, and callbacks to adopt a channel or user.

import { ApiError } from './conn.js';
import { avatar, confirmDialog, field, h, icon, openDialog, toast } from './ui.js';

const CHANNEL_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const USERNAME_RE = /^[a-z0-9][a-z0-9_.-]{0,31}$/;

function formError(id) {
  return h('p', { class: 'form-error', id, role: 'alert', hidden: true });
}

function showError(el, message) {
  el.textContent = message || '';
  el.hidden = !message;
}

function busy(btn, on, label) {
  btn.disabled = on;
  if (label) btn.textContent = label;
}

/** The password policy as the forms say it (docs/api.md, "Password policy"; the server decides). */
const PASSWORD_RULE = '12 to 128 characters, any characters (a few unrelated words work well). ' +
  'Common passwords and ones containing your username or the workspace name are refused.';

/** Characters as the server counts them (Unicode code points, not UTF-16 units). */
function passwordChars(s) { return [...s].length; }

/** Messages for the password policy (docs/api.md, "Password policy"). */
function passwordError(ctx, e) {
  if (e instanceof ApiError) {
    if (e.code === 'weak_password') return (e.message || 'This password is too easy to guess.') + ' Choose another one.';
    if (e.code === 'invalid_request') return e.message || 'Passwords must be 12 to 128 characters.';
  }
  return ctx.errorText(e);
}

// ---- channels ----------------------------------------------------------------------------------

export async function browseChannels(ctx) {
  const filter = h('input', { type: 'search', id: 'browse-filter', placeholder: 'Search channels', 'aria-label': 'Search channels' });
  const list = h('ul', { class: 'pick-list', id: 'browse-list' }, h('li', { class: 'pick-note', text: 'Loading…' }));
  let channels = [];
  const d = openDialog(
    'Browse channels',
    h(
      'div',
      { class: 'browse' },
      h('div', { class: 'browse-bar' }, filter, h('button', { type: 'button', class: 'btn primary', id: 'browse-create', text: 'Create channel', on: { click: () => createChannel(ctx) } })),
      list,
    ),
    { wide: true },
  );
  const render = () => {
    const q = filter.value.trim().toLowerCase();
    const rows = channels
      .filter((c) => !ctx.isDm(c))
      .filter((c) => !q || c.name.includes(q) || (c.title || '').toLowerCase().includes(q) || (c.topic || '').toLowerCase().includes(q))
      .sort((a, b) => a.name.localeCompare(b.name));
    if (!rows.length) {
      list.replaceChildren(h('li', { class: 'pick-note', text: q ? 'No channel matches.' : 'No channels yet. Create the first one!' }));
      return;
    }
    list.replaceChildren(
      ...rows.map((c) => {
        const member = typeof c.member === 'boolean' ? c.member : (c.members || []).includes(ctx.me.username);
        const btn = h('button', {
          type: 'button',
          class: member ? 'btn small' : 'btn small primary',
          text: member ? 'Open' : 'Join',
          on: {
            click: async () => {
              if (member) {
                ctx.adoptChannel({ ...c, member: true });
                d.close();
                return;
              }
              busy(btn, true, 'Joining…');
              try {
                const ch = await ctx.api('POST', `/api/v1/channels/${encodeURIComponent(c.name)}/join`);
                ctx.adoptChannel({ ...ch, member: true });
                d.close();
              } catch (e) {
                busy(btn, false, 'Join');
                toast(ctx.errorText(e), 'error');
              }
            },
          },
        });
        return h(
          'li',
          { class: 'pick-item', dataset: { channelName: c.name } },
          h('span', { class: 'pick-icon' }, icon(c.kind === 'private' ? 'lock' : 'hash', 16)),
          h(
            'span',
            { class: 'pick-main' },
            h('span', { class: 'pick-title', text: c.name + (c.archived ? ' (archived)' : '') }),
            h('span', { class: 'pick-sub', text: [c.topic, `${(c.members || []).length} member${(c.members || []).length === 1 ? '' : 's'}`].filter(Boolean).join(' · ') }),
          ),
          member ? null : h('button', { type: 'button', class: 'btn small', text: 'View', on: { click: () => { ctx.adoptChannel({ ...c, member: false }); d.close(); } } }),
          btn,
        );
      }),
    );
  };
  filter.addEventListener('input', render);
  try {
    const res = await ctx.api('GET', '/api/v1/channels');
    channels = res.channels || [];
    render();
  } catch (e) {
    list.replaceChildren(h('li', { class: 'pick-note error', text: ctx.errorText(e) }));
  }
}

export function createChannel(ctx) {
  const name = h('input', { type: 'text', id: 'new-channel-name', required: true, maxLength: 64, placeholder: 'e.g. plant-ops', autocomplete: 'off', autocapitalize: 'off', spellcheck: 'false' });
  const kind = h('select', { id: 'new-channel-kind' }, h('option', { value: 'public', text: 'Public — anyone in the workspace can join' }), h('option', { value: 'private', text: 'Private — invitation only' }));
  const topic = h('input', { type: 'text', id: 'new-channel-topic', maxLength: 250, placeholder: 'What is it about? (optional)' });
  const err = formError('new-channel-error');
  const submit = h('button', { type: 'submit', class: 'btn primary', id: 'new-channel-submit', text: 'Create' });
  name.addEventListener('input', () => {
    const v = name.value.toLowerCase().replace(/\s+/g, '-');
    if (v !== name.value) name.value = v;
  });
  const form = h(
    'form',
    {
      class: 'form',
      on: {
        submit: async (e) => {
          e.preventDefault();
          const n = name.value.trim();
          if (!CHANNEL_RE.test(n)) {
            showError(err, 'Names use lowercase letters, digits, "-" and "_", start with a letter or digit, and are at most 64 characters.');
            return;
          }
          busy(submit, true, 'Creating…');
          showError(err, '');
          const body = { name: n, kind: kind.value };
          if (topic.value.trim()) body.topic = topic.value.trim();
          try {
            const ch = await ctx.api('POST', '/api/v1/channels', body);
            d.close();
            ctx.adoptChannel({ ...ch, member: true });
          } catch (ex) {
            busy(submit, false, 'Create');
            showError(err, ex instanceof ApiError && ex.code === 'channel_exists' ? `A channel named "${n}" already exists.` : ctx.errorText(ex));
          }
        },
      },
    },
    field('Name', name),
    field('Visibility', kind),
    field('Topic', topic),
    err,
    h('div', { class: 'dialog-actions' }, h('button', { type: 'button', class: 'btn', text: 'Cancel', on: { click: () => d.close() } }), submit),
  );
  const d = openDialog('Create a channel', form);
}

export function channelSettings(ctx, c) {
  // The server decides (docs/security.md): the title and archiving are the creator's and
  // admins'; members may set the topic. The form only avoids offering what would be refused.
  const manager = (ctx.me && c.created_by === ctx.me.username) || ctx.isAdmin();
  const title = h('input', { type: 'text', id: 'channel-title', value: c.title || c.name, maxLength: 80, disabled: !manager });
  const topic = h('input', { type: 'text', id: 'channel-topic', value: c.topic || '', maxLength: 250 });
  const archived = h('input', { type: 'checkbox', id: 'channel-archived', checked: !!c.archived, disabled: !manager });
  const err = formError('channel-settings-error');
  const save = h('button', { type: 'submit', class: 'btn primary', id: 'channel-settings-save', text: 'Save' });
  const form = h(
    'form',
    {
      class: 'form',
      on: {
        submit: async (e) => {
          e.preventDefault();
          const body = {};
          if (title.value.trim() !== (c.title || c.name)) body.title = title.value.trim();
          if (topic.value.trim() !== (c.topic || '')) body.topic = topic.value.trim();
          if (archived.checked !== !!c.archived) body.archived = archived.checked;
          if (!Object.keys(body).length) {
            d.close();
            return;
          }
          busy(save, true, 'Saving…');
          try {
            const ch = await ctx.api('PATCH', `/api/v1/channels/${encodeURIComponent(c.name)}`, body);
            ctx.adoptChannel({ ...ch, member: c.member });
            d.close();
          } catch (ex) {
            busy(save, false, 'Save');
            showError(err, ctx.errorText(ex));
          }
        },
      },
    },
    h('p', { class: 'dialog-text muted', text: `#${c.name} · ${c.kind === 'private' ? 'private' : 'public'} · created by @${c.created_by || '?'}` }),
    field('Title', title),
    field('Topic', topic),
    h('label', { class: 'check' }, archived, h('span', { text: 'Archived (read-only: nobody can post)' })),
    manager ? null : h('p', { class: 'dialog-text muted', text: `Only @${c.created_by || '?'} and admins can change the title or archive this channel.` }),
    err,
    h('div', { class: 'dialog-actions' }, h('button', { type: 'button', class: 'btn', text: 'Cancel', on: { click: () => d.close() } }), save),
  );
  const d = openDialog(`Channel settings`, form);
}

// ---- direct messages ---------------------------------------------------------------------------

export async function newDm(ctx) {
  const filter = h('input', { type: 'search', id: 'dm-user-filter', placeholder: 'Find people', 'aria-label': 'Find people' });
  const list = h('ul', { class: 'pick-list', id: 'dm-user-list' }, h('li', { class: 'pick-note', text: 'Loading…' }));
  const chosen = new Set();
  const chips = h('div', { class: 'chips', id: 'dm-chosen' });
  const err = formError('dm-error');
  const start = h('button', { type: 'button', class: 'btn primary', id: 'dm-start', text: 'Start conversation', disabled: true });
  let users = [];
  const render = () => {
    const q = filter.value.trim().toLowerCase();
    const rows = users
      .filter((u) => u.username !== ctx.me.username && !u.disabled)
      .filter((u) => !q || u.username.includes(q) || (u.display_name || '').toLowerCase().includes(q))
      .sort((a, b) => ctx.displayName(a.username).localeCompare(ctx.displayName(b.username)));
    list.replaceChildren(
      ...(rows.length
        ? rows.map((u) => {
            const cb = h('input', { type: 'checkbox', checked: chosen.has(u.username), 'aria-label': `Select ${u.username}` });
            cb.addEventListener('change', () => {
              if (cb.checked) {
                if (chosen.size >= 7) {
                  cb.checked = false;
                  toast('A conversation has at most 8 people.', 'error');
                  return;
                }
                chosen.add(u.username);
              } else chosen.delete(u.username);
              renderChips();
            });
            return h(
              'li',
              { class: 'pick-item' },
              h(
                'label',
                { class: 'pick-label', dataset: { user: u.username } },
                cb,
                h('span', { class: 'pick-avatar' }, avatar(u.username, ctx.displayName(u.username), 32), ctx.presenceDot(u.username)),
                h('span', { class: 'pick-main' }, h('span', { class: 'pick-title', text: ctx.displayName(u.username) }), h('span', { class: 'pick-sub', text: `@${u.username}` })),
              ),
            );
          })
        : [h('li', { class: 'pick-note', text: 'Nobody matches.' })]),
    );
  };
  const renderChips = () => {
    chips.replaceChildren(...[...chosen].map((u) => h('span', { class: 'chip', text: ctx.displayName(u) })));
    start.disabled = chosen.size === 0;
  };
  start.addEventListener('click', async () => {
    busy(start, true, 'Starting…');
    try {
      const ch = await ctx.api('POST', '/api/v1/dms', { users: [...chosen] });
      d.close();
      ctx.adoptChannel({ ...ch, member: true });
    } catch (e) {
      busy(start, false, 'Start conversation');
      showError(err, ctx.errorText(e));
    }
  });
  filter.addEventListener('input', render);
  const d = openDialog('New direct message', h('div', { class: 'dm-picker' }, filter, chips, list, err, h('div', { class: 'dialog-actions' }, h('button', { type: 'button', class: 'btn', text: 'Cancel', on: { click: () => d.close() } }), start)));
  try {
    users = await ctx.reloadUsers();
    render();
  } catch (e) {
    list.replaceChildren(h('li', { class: 'pick-note error', text: ctx.errorText(e) }));
  }
}

// ---- user settings -----------------------------------------------------------------------------

export function settings(ctx) {
  const me = ctx.me;
  const dn = h('input', { type: 'text', id: 'settings-display-name', value: me.display_name || '', maxLength: 64, placeholder: me.username, autocomplete: 'name' });
  const nameErr = formError('settings-name-error');
  const saveName = h('button', { type: 'submit', class: 'btn primary', id: 'settings-save-name', text: 'Save name' });
  const nameForm = h(
    'form',
    {
      class: 'form',
      on: {
        submit: async (e) => {
          e.preventDefault();
          busy(saveName, true, 'Saving…');
          showError(nameErr, '');
          try {
            const u = await ctx.api('PATCH', '/api/v1/me', { display_name: dn.value.trim() });
            ctx.setUser({ username: me.username, ...u });
            toast('Display name saved.', 'success');
          } catch (ex) {
            showError(nameErr, ctx.errorText(ex));
          }
          busy(saveName, false, 'Save name');
        },
      },
    },
    h('h3', { class: 'form-title', text: 'Profile' }),
    h('p', { class: 'dialog-text muted', text: `Signed in as @${me.username} (${me.role || 'member'}).` }),
    field('Display name', dn, 'Shown instead of your username. Leave empty to use your username.'),
    nameErr,
    h('div', { class: 'dialog-actions' }, saveName),
  );

  const cur = h('input', { type: 'password', id: 'settings-current-password', autocomplete: 'current-password', required: true });
  const next = h('input', { type: 'password', id: 'settings-new-password', autocomplete: 'new-password', required: true, minLength: 12, maxLength: 256 });
  const again = h('input', { type: 'password', id: 'settings-confirm-password', autocomplete: 'new-password', required: true });
  const pwErr = formError('settings-password-error');
  const savePw = h('button', { type: 'submit', class: 'btn primary', id: 'settings-save-password', text: 'Change password' });
  const pwForm = h(
    'form',
    {
      class: 'form',
      on: {
        submit: async (e) => {
          e.preventDefault();
          showError(pwErr, '');
          if (passwordChars(next.value) < 12 || passwordChars(next.value) > 128) return showError(pwErr, 'The new password must be 12 to 128 characters.');
          if (next.value !== again.value) return showError(pwErr, 'The two new passwords differ.');
          busy(savePw, true, 'Changing…');
          try {
            await ctx.api('POST', '/api/v1/me/password', { current_password: cur.value, new_password: next.value });
            cur.value = next.value = again.value = '';
            toast('Password changed. Your other sessions were signed out.', 'success');
          } catch (ex) {
            showError(pwErr, ex instanceof ApiError && (ex.code === 'invalid_credentials' || ex.code === 'forbidden') ? 'The current password is wrong.' : passwordError(ctx, ex));
          }
          busy(savePw, false, 'Change password');
        },
      },
    },
    h('h3', { class: 'form-title', text: 'Password' }),
    // For password managers: which account this password belongs to.
    h('input', { type: 'text', name: 'username', autocomplete: 'username', value: me.username, hidden: true, readOnly: true, tabIndex: -1, 'aria-hidden': 'true' }),
    field('Current password', cur),
    field('New password', next, PASSWORD_RULE),
    field('Repeat new password', again),
    pwErr,
    h('div', { class: 'dialog-actions' }, savePw),
  );

  const d = openDialog(
    'Settings',
    h(
      'div',
      { class: 'settings' },
      nameForm,
      h('hr'),
      pwForm,
      h('hr'),
      h(
        'div',
        { class: 'dialog-actions spread' },
        h('span', { class: 'muted', text: 'Sign out of this browser.' }),
        h('button', { type: 'button', class: 'btn danger-outline', id: 'logout', on: { click: () => { d.close(); ctx.logout(); } } }, icon('logout', 16), 'Sign out'),
      ),
    ),
  );
}

// ---- administration ----------------------------------------------------------------------------

export async function admin(ctx) {
  if (!ctx.isAdmin()) return;
  const tbody = h('tbody', {}, h('tr', {}, h('td', { colSpan: 5, class: 'muted', text: 'Loading…' })));
  const table = h(
    'table',
    { class: 'admin-table', id: 'admin-users' },
    h('thead', {}, h('tr', {}, h('th', { text: 'User' }), h('th', { text: 'Role' }), h('th', { text: 'Status' }), h('th', { text: 'Actions', class: 'right' }))),
    tbody,
  );

  const uname = h('input', { type: 'text', id: 'admin-new-username', required: true, maxLength: 32, autocomplete: 'off', autocapitalize: 'off', spellcheck: 'false', placeholder: 'username' });
  const dname = h('input', { type: 'text', id: 'admin-new-display-name', maxLength: 64, placeholder: 'Display name (optional)' });
  const pw = h('input', { type: 'password', id: 'admin-new-password', required: true, autocomplete: 'new-password', placeholder: 'Initial password' });
  const role = h('select', { id: 'admin-new-role' }, h('option', { value: 'member', text: 'Member' }), h('option', { value: 'admin', text: 'Admin' }));
  const err = formError('admin-error');
  const create = h('button', { type: 'submit', class: 'btn primary', id: 'admin-create', text: 'Create user' });
  const form = h(
    'form',
    {
      class: 'form admin-create',
      on: {
        submit: async (e) => {
          e.preventDefault();
          showError(err, '');
          const username = uname.value.trim().toLowerCase();
          if (!USERNAME_RE.test(username)) return showError(err, 'Usernames are 1 to 32 of a-z, 0-9, ".", "_", "-", starting with a letter or digit.');
          if (passwordChars(pw.value) < 12) return showError(err, 'The password must be at least 12 characters.');
          busy(create, true, 'Creating…');
          const body = { username, password: pw.value, role: role.value };
          if (dname.value.trim()) body.display_name = dname.value.trim();
          try {
            await ctx.api('POST', '/api/v1/users', body);
            uname.value = dname.value = pw.value = '';
            role.value = 'member';
            toast(`User @${username} created.`, 'success');
            await load();
          } catch (ex) {
            showError(err, ex instanceof ApiError && ex.code === 'user_exists' ? `@${username} already exists.` : passwordError(ctx, ex));
          }
          busy(create, false, 'Create user');
        },
      },
    },
    h('h3', { class: 'form-title', text: 'New user' }),
    h('div', { class: 'form-grid' }, field('Username', uname), field('Display name', dname), field('Password', pw, PASSWORD_RULE), field('Role', role)),
    err,
    h('div', { class: 'dialog-actions' }, create),
  );

  const patch = async (u, body, what) => {
    try {
      const res = await ctx.api('PATCH', `/api/v1/users/${encodeURIComponent(u.username)}`, body);
      ctx.setUser({ ...u, ...res });
      toast(`@${u.username}: ${what}.`, 'success');
    } catch (ex) {
      toast(ctx.errorText(ex), 'error');
    }
    await load();
  };

  const resetPassword = (u) => {
    const npw = h('input', { type: 'password', id: 'admin-reset-password-input', autocomplete: 'new-password', required: true });
    const rerr = formError('admin-reset-error');
    const ok = h('button', { type: 'submit', class: 'btn primary', id: 'admin-reset-submit', text: 'Set password' });
    const rd = openDialog(
      `Reset password of @${u.username}`,
      h(
        'form',
        {
          class: 'form',
          on: {
            submit: async (e) => {
              e.preventDefault();
              if (passwordChars(npw.value) < 12) return showError(rerr, 'The password must be at least 12 characters.');
              busy(ok, true, 'Saving…');
              try {
                await ctx.api('POST', `/api/v1/users/${encodeURIComponent(u.username)}/password`, { password: npw.value });
                toast(`Password of @${u.username} reset; their sessions were signed out.`, 'success');
                rd.close();
                admin(ctx);
              } catch (ex) {
                busy(ok, false, 'Set password');
                showError(rerr, passwordError(ctx, ex));
              }
            },
          },
        },
        h('p', { class: 'dialog-text', text: 'Every session of this user is signed out.' }),
        field('New password', npw, PASSWORD_RULE),
        rerr,
        h('div', { class: 'dialog-actions' }, h('button', { type: 'button', class: 'btn', text: 'Cancel', on: { click: () => { rd.close(); admin(ctx); } } }), ok),
      ),
    );
  };

  const load = async () => {
    let users;
    try {
      users = await ctx.reloadUsers();
    } catch (ex) {
      tbody.replaceChildren(h('tr', {}, h('td', { colSpan: 4, class: 'form-error', text: ctx.errorText(ex) })));
      return;
    }
    users.sort((a, b) => a.username.localeCompare(b.username));
    tbody.replaceChildren(
      ...users.map((u) => {
        const self = u.username === ctx.me.username;
        const roleSel = h('select', { class: 'admin-role', 'aria-label': `Role of ${u.username}`, disabled: self }, h('option', { value: 'member', text: 'Member' }), h('option', { value: 'admin', text: 'Admin' }));
        roleSel.value = u.role || 'member';
        roleSel.addEventListener('change', () => patch(u, { role: roleSel.value }, `role set to ${roleSel.value}`));
        const toggle = h('button', {
          type: 'button',
          class: u.disabled ? 'btn small admin-toggle-disabled' : 'btn small danger-outline admin-toggle-disabled',
          text: u.disabled ? 'Enable' : 'Disable',
          disabled: self,
          on: {
            click: async () => {
              if (!u.disabled && !(await confirmDialog('Disable user', `Disable @${u.username}? They are signed out everywhere at once.`, 'Disable', true))) {
                admin(ctx);
                return;
              }
              await patch(u, { disabled: !u.disabled }, u.disabled ? 'enabled' : 'disabled');
              if (!u.disabled) admin(ctx);
            },
          },
        });
        return h(
          'tr',
          { dataset: { user: u.username }, class: u.disabled ? 'is-disabled' : '' },
          h('td', {}, h('div', { class: 'admin-user' }, avatar(u.username, ctx.displayName(u.username), 28), h('div', {}, h('div', { class: 'pick-title', text: u.display_name || u.username }), h('div', { class: 'pick-sub', text: `@${u.username}${self ? ' (you)' : ''}` })))),
          h('td', {}, roleSel),
          h('td', {}, h('span', { class: u.disabled ? 'status-pill off' : 'status-pill on', text: u.disabled ? 'Disabled' : 'Active' })),
          h('td', { class: 'right' }, h('div', { class: 'row-actions' }, h('button', { type: 'button', class: 'btn small admin-reset-password', text: 'Reset password', on: { click: () => resetPassword(u) } }), toggle)),
        );
      }),
    );
  };

  openDialog('Administration', h('div', { class: 'admin' }, h('h3', { class: 'form-title', text: 'Users' }), h('div', { class: 'table-wrap' }, table), h('hr'), form), { wide: true });
  await load();
}
