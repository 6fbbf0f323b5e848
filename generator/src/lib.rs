//! Seeded smart-city IoT data generator.
