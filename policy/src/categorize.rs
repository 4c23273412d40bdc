//! Categorisation (SPEC §2.4).

use crate::{Categorization, Category, RepositoryStats};

/// The category of a repository: the first row of SPEC §2.4 whose every bound holds.
pub fn categorize(stats: &RepositoryStats) -> Categorization {
    let (stars, contributors, prs) = (stats.star_count, stats.contributor_count, stats.pr_count);
    let category = if stars == 0 && contributors <= 2 && prs <= 10 {
        Category::Test
    } else if stars <= 50 && contributors <= 10 && prs <= 100 {
        Category::Small
    } else if stars <= 500 && contributors <= 50 && prs <= 1000 {
        Category::Medium
    } else if stars <= 5000 && contributors <= 200 && prs <= 10000 {
        Category::Large
    } else {
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
