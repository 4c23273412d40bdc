//! Plain-text tables for people: aligned columns, two spaces between them, no borders.

/// A table being built: a header row and data rows of strings.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    right: Vec<bool>,
}

impl Table {
    /// A table with these column headings.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Table {
        let header: Vec<String> = header.into_iter().map(Into::into).collect();
        let right = vec![false; header.len()];
        Table { header, rows: Vec::new(), right }
    }

    /// Align column `index` to the right (numbers).
    pub fn right(mut self, index: usize) -> Table {
        if let Some(r) = self.right.get_mut(index) {
            *r = true;
        }
        self
    }

    /// Add a row (missing cells print empty, extra cells are kept).
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).chain([self.header.len()]).max().unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                let pad = width - cell.chars().count();
                if i > 0 {
                    line.push_str("  ");
                }
                if self.right.get(i).copied().unwrap_or(false) {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Key–value lines with the keys aligned (`key:  value`).
pub fn pairs(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        let pad = width - k.chars().count();
        out.push_str(k);
        out.push(':');
        out.extend(std::iter::repeat_n(' ', pad + 2));
        out.push_str(v);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_numbers_go_right() {
        let mut t = Table::new(["name", "jobs"]).right(1);
        t.row(["inngest", "7"]);
        t.row(["github_actions", "12"]);
        assert_eq!(t.render(), "name            jobs\ninngest            7\ngithub_actions    12\n");
    }

    #[test]
    fn pairs_align_keys() {
        assert_eq!(pairs(&[("a", "1".into()), ("long", "2".into())]), "a:     1\nlong:  2\n");
    }
}
