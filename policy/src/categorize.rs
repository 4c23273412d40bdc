//! Categorisation (SPEC §2.4).

use crate::{Categorization, Category, NoTrace, RepositoryStats, Section, Trace, Tracer};

/// The category of a repository: the first row of SPEC §2.4 whose every bound holds.
pub fn categorize(stats: &RepositoryStats) -> Categorization {
    categorize_with(stats, &mut NoTrace)
}

/// [`categorize()`], recording its checks (section [`Section::Categorization`]) in `trace`.
pub fn categorize_traced(stats: &RepositoryStats, trace: &mut Trace) -> Categorization {
    categorize_with(stats, trace)
}

/// The one implementation of SPEC §2.4, generic over the tracer: one check per row, in
/// order, up to the first that holds.
pub fn categorize_with<T: Tracer>(stats: &RepositoryStats, t: &mut T) -> Categorization {
    const S: Section = Section::Categorization;
    let (stars, contributors, prs) = (stats.star_count, stats.contributor_count, stats.pr_count);
    // The values of a row: each number against its bound.
    let within = |max_stars: u32, max_contributors: u32, max_prs: u32| {
        let cmp = |what: &str, v: u32, max: u32| {
            let op = if max == 0 { "=" } else { "≤" };
            format!("{what} {v} {op} {max}: {}", crate::trace::yes(v <= max))
        };
        format!(
            "{}, {}, {}",
            cmp("stars", stars, max_stars),
            cmp("contributors", contributors, max_contributors),
            cmp("PRs", prs, max_prs)
        )
    };
    let category = if t.check(
        S,
        Category::Test.as_str(),
        "stars = 0, contributors ≤ 2, PRs ≤ 10",
        || within(0, 2, 10),
        stars == 0 && contributors <= 2 && prs <= 10,
    ) {
        Category::Test
    } else if t.check(
        S,
        Category::Small.as_str(),
        "stars ≤ 50, contributors ≤ 10, PRs ≤ 100",
        || within(50, 10, 100),
        stars <= 50 && contributors <= 10 && prs <= 100,
    ) {
        Category::Small
    } else if t.check(
        S,
        Category::Medium.as_str(),
        "stars ≤ 500, contributors ≤ 50, PRs ≤ 1000",
        || within(500, 50, 1000),
        stars <= 500 && contributors <= 50 && prs <= 1000,
    ) {
        Category::Medium
    } else if t.check(
        S,
        Category::Large.as_str(),
        "stars ≤ 5000, contributors ≤ 200, PRs ≤ 10000",
        || within(5000, 200, 10000),
        stars <= 5000 && contributors <= 200 && prs <= 10000,
    ) {
        Category::Large
    } else {
        t.check(
            S,
            Category::Enterprise.as_str(),
            "otherwise (no other row held)",
            || format!("stars {stars}, contributors {contributors}, PRs {prs}"),
            true,
        );
        Category::Enterprise
    };
    let score = u64::from(stars) + u64::from(contributors) + u64::from(prs / 10);
    Categorization {
        category,
        priority_level: category.priority_level(),
        is_test_repository: category == Category::Test,
        // min(100, …) fits in a u8.
        monthly_activity_score: score.min(100) as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(s: u32, c: u32, p: u32) -> Categorization {
        categorize(&RepositoryStats { star_count: s, contributor_count: c, pr_count: p })
    }

    #[test]
    fn boundaries() {
        assert_eq!(cat(0, 2, 10).category, Category::Test);
        assert_eq!(cat(0, 3, 10).category, Category::Small);
        assert_eq!(cat(50, 10, 100).category, Category::Small);
        assert_eq!(cat(51, 10, 100).category, Category::Medium);
        assert_eq!(cat(5000, 200, 10000).category, Category::Large);
        assert_eq!(cat(5001, 0, 0).category, Category::Enterprise);
    }

    #[test]
    fn activity_score_saturates() {
        assert_eq!(cat(u32::MAX, u32::MAX, u32::MAX).monthly_activity_score, 100);
        assert_eq!(cat(3, 4, 59).monthly_activity_score, 12);
        assert!(cat(0, 0, 0).is_test_repository);
        assert_eq!(cat(0, 0, 0).priority_level, 100);
    }
}
