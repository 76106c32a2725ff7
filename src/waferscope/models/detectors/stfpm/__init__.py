"""STFPM: Student-Teacher Feature Pyramid Matching (Wang et al., BMVC 2021)."""
