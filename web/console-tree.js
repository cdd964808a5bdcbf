// The discovery tree: RFC 6690 links (from parseLinkFormat) as nested lists by path segment.
// A segment with a link is a resource (a button carrying data-path, with its attributes shown);
// one without is a folder. Links to other servers (absolute URIs) are grouped by origin, and
// their data-path is the whole URI (the console sends those through the server's proxy).

import { contentFormatName, paramEntries } from './console-payload.js';

const SHOWN_ATTRS = ['rt', 'if', 'ct', 'obs', 'sz', 'title'];

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

/** Splits a link target into [origin ('' for this server), path segments]. */
export function splitTarget(target) {
  const m = /^([a-z][a-z0-9+.-]*:\/\/[^/?#]*)([^?#]*)/i.exec(target);
  const origin = m ? m[1] : '';
  const path = (m ? m[2] : target.split(/[?#]/)[0]) || '/';
  return [origin, path.split('/').filter(Boolean)];
}

/**
 * @param {Array<{target: string, params: object}>} links
 * @param {(path: string, attrs: Array<[string, string|true]>) => void} onSelect
 * @returns {HTMLUListElement}
 */
export function renderTree(links, onSelect) {
  const node = () => ({ children: new Map(), link: null });
  const origins = new Map([['', node()]]);
  for (const link of links) {
    const [origin, segments] = splitTarget(link.target);
    if (!origins.has(origin)) origins.set(origin, node());
    let n = origins.get(origin);
    for (const s of segments) {
      if (!n.children.has(s)) n.children.set(s, node());
      n = n.children.get(s);
    }
    n.link ??= link;
  }
  const entry = (path, link, label) => {
    const attrs = paramEntries(link.params);
    const shown = el('span', { class: 'attrs' });
    for (const key of SHOWN_ATTRS) {
      for (const [k, v] of attrs) {
        if (k !== key) continue;
        const value = v === true || v === '' || v === undefined ? '' : String(v);
        const text = key === 'title' ? value : `${key}${value ? `=${value}` : ''}`;
        const title = key === 'ct' && value ? value.split(/\s+/).map((c) => contentFormatName(Number(c))).join(', ') : undefined;
        shown.append(el('span', { class: `attr attr-${key}`, title }, text));
      }
    }
    const button = el('button', {
      type: 'button', class: 'resource', 'data-path': path, title: `select ${path}`,
      onclick: () => onSelect(path, attrs),
    }, label);
    return el('span', { class: 'entry' }, button, shown);
  };
  const render = (n, prefix) => {
    const ul = el('ul');
    for (const [name, child] of [...n.children.entries()].sort(([a], [b]) => a.localeCompare(b))) {
      const path = `${prefix}/${name}`;
      const li = el('li');
      li.append(child.link ? entry(path, child.link, `/${name}`) : el('span', { class: 'folder' }, `/${name}`));
      if (child.children.size) li.append(render(child, path));
      ul.append(li);
    }
    return ul;
  };
  const top = el('ul');
  for (const [origin, n] of origins) {
    if (origin === '') {
      if (n.link) top.append(el('li', {}, entry('/', n.link, '/')));
      top.append(...render(n, '').children);
    } else {
      const li = el('li', {}, n.link ? entry(`${origin}/`, n.link, origin) : el('span', { class: 'folder origin' }, origin));
      if (n.children.size) li.append(render(n, origin));
      top.append(li);
    }
  }
  return top;
}
